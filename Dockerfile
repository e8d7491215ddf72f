# The one image for web, worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Pango and fonts for the PDF reports (WeasyPrint).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf build *.egg-info

COPY . .
# Production settings refuse to load without their secrets: the build gives throwaway ones (collectstatic
# reads neither the database nor the keys). tests/stack.py runs this same line before the stack test.
RUN DJANGO_ENV=production SECRET_KEY=build-only DATABASE_URL=postgres://build@127.0.0.1/build \
    AUDIT_HEAD_DIR=/tmp AUDIT_SIGNING_KEY=build-only \
    FIELD_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --noinput \
    && useradd --system --uid 1000 app && chown -R app /app
USER app

EXPOSE 8000
# The web service's server, as docker-compose.yml runs it (ASGI: live-update streams cost no thread).
CMD ["gunicorn", "progress_site.asgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--worker-class", "uvicorn_worker.UvicornWorker", "--timeout", "30", "--access-logfile", "-"]
