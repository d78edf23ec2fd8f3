FROM python:3.11-slim
WORKDIR /app
# The locked versions and hashes first (a layer that changes only with the lock), then the
# project itself without further dependencies: the image runs what the tests ran.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
COPY projections ./projections
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 ledger \
    && mkdir -p /keys /kek /data /witness /handover /console \
    && chown ledger /keys /kek /data /witness /handover /console && chmod 700 /keys /kek
USER ledger
ENV LEDGER_KEYS=/keys LEDGER_KEK_FILE=/kek/kek.key LEDGER_HOME=/data
EXPOSE 8000
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
