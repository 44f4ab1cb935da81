#!/bin/sh
# One-shot set-up of the MinIO object store (the `minio-init` service, image minio/mc): the inbox and COG
# buckets, anonymous read on the COGs (asset hrefs), and the inbox's bucket notifications to stacdrop's
# S3-events exchange through MinIO's AMQP target `stacdrop` (configured on the minio service by the
# MINIO_NOTIFY_AMQP_*_STACDROP variables). Idempotent: safe on every `docker compose up`.
set -eu
mc alias set stack "http://minio:9000" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "stack/$INBOX_BUCKET"
mc mb --ignore-existing "stack/$COG_BUCKET"
mc anonymous set download "stack/$COG_BUCKET"
# MinIO's ARN for the AMQP target named `stacdrop`; put covers every upload, delete every removal.
mc event add --ignore-existing "stack/$INBOX_BUCKET" arn:minio:sqs::stacdrop:amqp --event put,delete
mc event list "stack/$INBOX_BUCKET"
