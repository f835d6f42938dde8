#!/usr/bin/env bash
# The test command: set up if needed, run every notebook's tests (nbdev_test), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. "${VENV:-.venv}/bin/activate"
if ! ls data/BTC-USD*.csv >/dev/null 2>&1; then
  echo "test: no data/BTC-USD*.csv: real-data tests will be skipped; notebooks fall back to synthetic data"
fi
echo "test: nbdev_test (notebook examples and tests)"
nbdev_test --n_workers 2
echo "test: pytest"
python -m pytest -q "$@"
