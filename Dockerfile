# Tars on the official Airflow image, for teams that run Airflow in containers.
FROM apache/airflow:3.3.2-python3.11

USER root
# The SSH client (and socat for HAProxy sockets reached by hand); no server parts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client socat \
 && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root requirements.txt pyproject.toml /opt/tars/
RUN pip install --no-cache-dir -r /opt/tars/requirements.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root configs/ /opt/airflow/configs/

ENV TARS_CONFIG_DIR=/opt/airflow/configs/apps \
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
