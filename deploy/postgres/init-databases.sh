#!/bin/bash
# The databases of the server stack, owned by POSTGRES_USER: the MLflow tracking server's, its
# basic-auth app's (deploy/compose.auth.yaml) and the Prefect server's. The official postgres image
# runs this once, when its data volume is empty (it executes the file, or sources it when the mount
# lost the executable bit: hence no `exit` and no `set -u` here).
set -e
for database in mlflow mlflow_auth prefect; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
        -c "CREATE DATABASE \"$database\" OWNER \"$POSTGRES_USER\";"
done
