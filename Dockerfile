# cja-audiences on the official Airflow image. Mirrors the Makefile's install line for line:
# requirements.txt (exact pins), then the package itself, editable from plugins/ (the folder
# Airflow imports it from), so `cja-audiences` / `python -m cja_audiences` work in the image.
FROM apache/airflow:3.3.2-python3.12

COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

COPY --chown=airflow:root pyproject.toml requirements.txt /opt/airflow/
COPY --chown=airflow:root dags/    /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

# Airflow's own defaults otherwise: DAGs are created paused, process counts are the image's.
ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CJA_AUDIENCES_HOME=/opt/airflow/cja_home \
    CJA_AUDIENCES_SPECS=/opt/airflow/include/audiences \
    CJA_AUDIENCES_FILTERS=/opt/airflow/include/filters
