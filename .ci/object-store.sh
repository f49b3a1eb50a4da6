# The object storage step of .ci/run (sourced by it; runnable alone with
# `bash .ci/object-store.sh` from the checkout's root): a moto S3 server,
# pinned, in a throwaway venv, a bucket; Azurite, pinned, from npm, a
# container; and the object store tests against both under CI=true (so a
# test that finds no server fails instead of skipping), with the failing
# tests' output printed when any fails. Stops the servers and clears its
# trap before it returns.
object_store_step() {
    local tmp port i
    tmp=$(mktemp -d /tmp/safestash-s3.XXXXXX)
    OBJ_TMP=$tmp
    obj_stop() {
        local p
        for p in moto azurite; do
            if [ -f "$OBJ_TMP/$p.pid" ]; then
                kill "$(cat "$OBJ_TMP/$p.pid")" 2>/dev/null || true
                wait "$(cat "$OBJ_TMP/$p.pid")" 2>/dev/null || true
            fi
        done
        rm -rf "$OBJ_TMP"
        # What the caller asked to stop with it (.ci/run: PostgreSQL).
        if [ -n "${OBJ_ALSO_STOP:-}" ]; then "$OBJ_ALSO_STOP"; fi
    }
    trap obj_stop EXIT
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5' \
        'azure-storage-blob==12.26.0'
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$tmp/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$tmp/moto.log" 2>&1 &
    echo $! >"$tmp/moto.pid"
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
    export SAFESTASH_TEST_S3_URL="s3://safestash-test"
    # Waits for the server while creating the bucket (boto3 comes with moto).
    for i in $(seq 1 100); do
        if "$tmp/venv/bin/python" -c '
import boto3, os
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="safestash-test")
' 2>/dev/null; then
            break
        fi
        [ "$i" = 100 ] && { cat "$tmp/moto.log"; echo "moto did not start"; return 1; }
        sleep 0.2
    done
    echo "server: moto $("$tmp/venv/bin/python" -c 'import moto; print(moto.__version__)') at $AWS_ENDPOINT_URL, bucket $SAFESTASH_TEST_S3_URL"
    # Azurite, pinned, in memory: a second implementation of conditional
    # writes (it answers some If-None-Match conflicts with 409, not 412).
    (cd "$tmp" && npm install --silent --no-audit --no-fund azurite@3.35.0 >/dev/null)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$tmp/node_modules/.bin/azurite-blob" --inMemoryPersistence --blobHost 127.0.0.1 \
        --blobPort "$port" --skipApiVersionCheck --silent >"$tmp/azurite.log" 2>&1 &
    echo $! >"$tmp/azurite.pid"
    export AZURE_STORAGE_USE_EMULATOR=true
    export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port"
    export SAFESTASH_TEST_AZURE_URL="az://safestash-test"
    for i in $(seq 1 100); do
        if "$tmp/venv/bin/python" -c '
import os
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
url = os.environ["AZURITE_BLOB_STORAGE_URL"] + "/devstoreaccount1"
BlobServiceClient(url, credential={"account_name": "devstoreaccount1", "account_key": key}).create_container("safestash-test")
' 2>/dev/null; then
            break
        fi
        [ "$i" = 100 ] && { cat "$tmp/azurite.log"; echo "azurite did not start"; return 1; }
        sleep 0.2
    done
    echo "server: azurite $(node -p "require(\"$tmp/node_modules/azurite/package.json\").version") at $AZURITE_BLOB_STORAGE_URL, container $SAFESTASH_TEST_AZURE_URL"
    if ! CI=true cargo test --features object-store --test object_store --test backends \
        --test fencing -- --nocapture >"$tmp/tests.log" 2>&1; then
        grep -E "^test |test result" "$tmp/tests.log" || true
        grep -E -A20 "panicked|^error" "$tmp/tests.log" | head -200
        echo "the object store tests failed"
        return 1
    fi
    grep -E "^test |test result|processes x|stale save|server silent|refused:|conformance|negative control" \
        "$tmp/tests.log"
    # The Go package against this server (its per-backend subtests).
    command -v go >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; }
    cargo build -p safestash-ffi
    (cd bindings/go && CI=true go test -race -count=1 -run '/s3$' -v ./... | grep -E "^(---|ok|FAIL)|s3")
    # What the caller runs while the servers are up (.ci/run: the Python tests).
    if [ -n "${OBJ_AFTER_TESTS:-}" ]; then "$OBJ_AFTER_TESTS"; fi
    cargo run --release --features object-store --example bench_objstore -- --rounds 5
    # The default build pulls in no async runtime, HTTP stack or object_store.
    local found
    found=$(cargo tree -e normal 2>/dev/null | grep -Eci "tokio|object_store|reqwest|hyper" || true)
    [ "$found" = 0 ] || { echo "the default build depends on tokio/object_store/reqwest/hyper"; return 1; }
    echo "default build: no tokio, no object_store, no HTTP stack"
    obj_stop
    trap - EXIT
    unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ALLOW_HTTP
    unset SAFESTASH_TEST_S3_URL OBJ_TMP
    unset AZURE_STORAGE_USE_EMULATOR AZURITE_BLOB_STORAGE_URL SAFESTASH_TEST_AZURE_URL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    object_store_step
fi
