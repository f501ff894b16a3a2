#!/usr/bin/env bash
# The GPU checks of the sequence retriever (issue 12), one script for a lent GPU machine
# (bench/README.md "Seqrec on a GPU"): the CUDA cases of tests/test_seqrec.py and the stage end to end on
# CUDA, then one epoch of 1M users x 100 events (bench_seqrec.py --epoch) at the default batch of 128 windows
# and at 1,024. Logs go to $OUT.
#   bash bench/device_seqrec.sh          # PYTHONPATH must reach recstack's dependencies (see the README)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/device_seqrec}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy, pandas, pyarrow; print('torch', torch.__version__, 'numpy', numpy.__version__,
'pandas', pandas.__version__, 'pyarrow', pyarrow.__version__, 'cuda', torch.cuda.is_available())"
timeout 240 python3 bench/bench_seqrec.py --epoch --users 1000000 2>&1 | tee "$OUT/epoch_b128.log"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_seqrec.py -k "cuda or (end_to_end and extra0)" \
    2>&1 | tee "$OUT/pytest_cuda.log" | tail -n 25
timeout 120 python3 bench/bench_seqrec.py --epoch --users 1000000 --set seqrec.batch_size=1024 2>&1 \
    | tee "$OUT/epoch_b1024.log"
