"""Scripted sales calls with every turn labelled by the cue card it should raise.

Written for ``bench.bench_card_accuracy`` (not drawn from ``nlp/data`` or any intent set): three
calls to sales leaders in different industries, each line labelled with the card kinds that
would be right for it (empty: no card is right). Hard negatives are marked in comments: rep
lines full of trigger words ("follow up", prices, competitor names), customer lines that sound
like objections but are not ("that's exactly the problem"), small talk and closings.

A rep line is labelled ``next_step`` only when it proposes a next step *and* the customer's
reply agrees to it; that reply is labelled ``next_step`` too (the next-step card is right for
the moment, whichever of the two lines it quotes). A rep proposal the customer turns down is a
negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from audio.chunk import Speaker

COMPETITOR_OR_OBJECTION = frozenset({"competitor", "objection_competitor"})
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LabelledTurn:
    speaker: Speaker
    text: str
    expect: frozenset[str] = NONE  # card kinds that are right for this line; empty: none


def c(text: str, *kinds: str) -> LabelledTurn:
    return LabelledTurn("customer", text, frozenset(kinds))


def r(text: str, *kinds: str) -> LabelledTurn:
    return LabelledTurn("rep", text, frozenset(kinds))


SOFTWARE_CALL = (
    r("Hi Priya, it's Marcus from Cuecard. Thanks for making time this afternoon."),
    c("No problem. It has been a hectic week, but I'm glad we could connect."),
    # hard negative: a rep describing a problem is no next step
    r("Last time you said your new hires struggle to follow up on leads quickly."),
    # hard negative: agreement that contains "problem"
    c("Yes, that is exactly the problem we keep running into."),
    r("Our cards show the rep what to say while the buyer is still on the line."),
    c(
        "Does it plug into HubSpot, or would we have to move our data somewhere else?",
        "question",
        "competitor",
    ),
    r("It writes straight into HubSpot, so nothing has to move."),  # hard negative: competitor
    # a plain price question: a buying signal by the label conventions (docs/intent.md)
    c("Good. And roughly what would this run us for fifty reps?", "question", "buying_signal"),
    r("For fifty seats you would be looking at about four thousand dollars a month."),  # price
    c("Ouch. That is well beyond what we set aside for tooling this year.", "objection_price"),
    r("Understood. Let's look at what one extra closed deal a month is worth to you."),
    c("Fair enough. Our average deal is around twelve thousand dollars."),
    r("So a single extra win covers it three times over."),
    c(
        "Even so, our CFO has to sign off on anything above two thousand a month.",
        "objection_authority",
    ),
    r(
        "Makes sense. Could we get thirty minutes with her next week to walk through it?",
        "next_step",
    ),
    c("Sure, Thursday afternoon should work for her.", "next_step"),
    r("Perfect. I will send an invite for Thursday at two."),
    # a data-privacy question: objection_trust by the label conventions (docs/intent.md)
    c(
        "One more thing. Where is the call audio kept, and who can listen to it?",
        "question",
        "objection_trust",
    ),
    r("It stays on your own servers. Nobody outside your company can reach it."),
    c("Okay, that sounds reasonable."),
    r("Thanks Priya, talk to you on Thursday."),
    c("Thanks Marcus, have a good one."),
)

STAFFING_CALL = (
    r("Morning Tom, this is Jess with Cuecard. How was the conference in Denver?"),
    c("Exhausting, but we met some good people. Our booth was busy all three days."),
    r("Glad to hear it. I wanted to pick up where we left off on coaching for your recruiters."),
    c(
        "Honestly, I'm not convinced we need this. The team is already hitting its targets.",
        "objection_need",
    ),
    r("That is great. What happens to those targets when you double the team next spring?"),
    c("That is a fair question, I had not really thought about it."),  # hard negative
    r("Most of our clients see new hires ramp up in half the time."),
    c(
        "We tried a coaching platform two years ago and it was a disaster. I am wary of that.",
        "objection_trust",
    ),
    r("I understand. What went wrong with that rollout?"),
    c("Nobody used it. The recordings just piled up."),  # hard negative: a story, no objection
    r("That is the difference: our cards show up during the call, not after it."),
    c(
        "We are using Gong for recordings at the moment, and the team knows it well.",
        *COMPETITOR_OR_OBJECTION,
    ),
    r("Lots of our customers keep Gong and add us for live guidance."),  # hard negative
    c("Either way, nothing is happening before our budget resets in January.", "objection_timing"),
    # hard negative: a proposal the customer turns down
    r("Would it make sense to run a small pilot in December, so you are ready on day one?"),
    c("No, December will not work with the holidays coming up.", "objection_timing"),
    r("Fair enough. What would you need to see from us before January?"),
    c(
        "If the references check out, how quickly could we get forty recruiters live?",
        "buying_signal",
        "question",
    ),
    r("Usually within two weeks. I will send you two reference contacts today."),
    c(
        "Great, send them over and I will set up a call with our COO for next Wednesday.",
        "next_step",
    ),
    r("Will do. Thanks for your time, Tom."),
    c("Thanks, bye for now."),
)

DISTRIBUTION_CALL = (
    r("Hey Alicia, Ben from Cuecard here. Did the weather hold up for your trip?"),
    c("It did, thankfully. We even got a day out at the lake."),
    r("Nice. So, you wanted to see how the cards work on a real call."),
    # hard negative: sounds like a price objection, says the opposite
    c("Right. The price is not really an issue for us, we just want something that works."),
    r("Understood. Let me show you the card a rep gets for a pricing objection."),
    c("Oh, that's neat. Can our managers change what the cards say?", "question"),
    r("Yes, every card lives in a playbook file that your managers can edit."),
    c(
        "That is exactly what we need. How soon could we roll this out to the inside sales team?",
        "buying_signal",
        "question",
    ),
    r("Most teams are live in about a week."),
    c(
        "And does it work with Salesforce? All of our accounts live there.",
        "question",
        "competitor",
    ),
    r("Yes, the summaries go straight into Salesforce after every call."),  # hard negative
    c("Our reps spend way too long writing notes after their calls."),  # hard negative: pain
    r("That is the part we automate. The summary is written before they hang up."),
    c(
        "I love that. Can you send over the paperwork so procurement can get started?",
        "buying_signal",
        "next_step",
    ),
    r("Absolutely. Should I also set up a training session for your team leads?", "next_step"),
    c("Yes, please do.", "next_step"),  # agrees to the rep's proposal
    r("Great. How many people will join?"),
    c("About twelve, mostly team leads and a couple of managers."),
    r("Perfect. I will send two time slots this afternoon."),
    c("Sounds good. Let's lock in the first slot next Monday.", "next_step"),
    r("Done. Thanks Alicia, enjoy the rest of your week."),
    c("You too, take care."),
)

SCRIPTS: dict[str, tuple[LabelledTurn, ...]] = {
    "software": SOFTWARE_CALL,
    "staffing": STAFFING_CALL,
    "distribution": DISTRIBUTION_CALL,
}
