FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY projections ./projections
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ledger \
    && mkdir -p /keys /data /witness /handover && chown ledger /keys /data /witness /handover
USER ledger
ENV LEDGER_KEYS=/keys LEDGER_HOME=/data
EXPOSE 8000
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
