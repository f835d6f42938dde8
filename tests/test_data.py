import numpy as np
import pandas as pd
import pytest
from btc_rl.data import (load_prices, load_btc, log_returns, make_splits, fit_normalizer, synthetic_prices, download_prices,
                         SYNTHETIC_SOURCE)
from conftest import real_csv

def test_real_btc_loads(btc_csv):
    df = load_prices(btc_csv)
    assert len(df) == 3758
    assert (df.index[0], df.index[-1]) == (pd.Timestamp("2014-09-18"), pd.Timestamp("2024-12-31"))
    assert df.index.is_monotonic_increasing and (df["Close"] > 0).all()
    assert {"Open", "High", "Low", "Close", "Volume"} <= set(df.columns)

def test_real_spy_loads():
    p = real_csv("SPY")
    if p is None: pytest.skip("no real SPY CSV (fresh clone): real-data check skipped")
    df = load_prices(p)
    assert len(df) == 6332 and df.index[0] == pd.Timestamp("1999-11-01")

def _write_both_layouts(tmp_path, df):
    plain = tmp_path / "plain.csv"; df.to_csv(plain)
    multi = df.copy(); multi.columns = pd.MultiIndex.from_product([["Close", "Open"], ["BTC-USD"]], names=["Price", "Ticker"])
    yf = tmp_path / "yf.csv"; multi.to_csv(yf)
    return plain, yf

def test_both_layouts_read_the_same(tmp_path):
    df = synthetic_prices(50)[["Close"]].assign(Open=1.0)
    plain, yf = _write_both_layouts(tmp_path, df)
    assert yf.read_text().splitlines()[1].startswith("Ticker,")
    a, b = load_prices(plain), load_prices(yf)
    pd.testing.assert_series_equal(a["Close"], b["Close"])
    np.testing.assert_allclose(a["Close"].to_numpy(), df["Close"].to_numpy())

GOOD = "Date,Close\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n"

@pytest.mark.parametrize("text,msg", [
    ("", "file is empty"),
    ("Date,Close\n", "no data rows"),
    ("Date,Open\n2024-01-01,1\n", "no Close column"),
    ("Date,Close\n2024-01-01,1\n2024-01-02,abc\n2024-01-03,2\n2024-01-04,\n", "2 non-numeric or missing Close values (first on 2024-01-02)"),
    ("Date,Close\n2024-01-01,1\n2024-01-02,nan\n", "1 non-numeric or missing Close values (first on 2024-01-02)"),
    ("Date,Close\n2024-01-01,1\n2024-01-02,-5\n2024-01-03,0\n", "Close must be positive; 2 rows are not (first on 2024-01-02)"),
    ("Date,Close\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n", "1 duplicate dates (first 2024-01-02)"),
    ("Date,Close\n2024-01-01,1\n", "1 rows, but at least 2 are needed"),
    ("Date,Close\nnot a date,1\n2024-01-02,2\n", "unparseable dates"),
])
def test_bad_input_names_file_and_problem(tmp_path, text, msg):
    p = tmp_path / "bad.csv"; p.write_text(text)
    with pytest.raises(ValueError) as e: load_prices(p)
    assert str(p) in str(e.value) and msg in str(e.value)

def test_missing_file_and_too_few_rows(tmp_path):
    with pytest.raises(ValueError, match="nope.csv: file not found"): load_prices(tmp_path / "nope.csv")
    p = tmp_path / "ok.csv"; p.write_text(GOOD)
    with pytest.raises(ValueError, match="3 rows, but at least 100"): load_prices(p, min_rows=100)

def test_case_insensitive_columns_and_adj_close(tmp_path):
    p = tmp_path / "x.csv"; p.write_text("date,OPEN,close,Adj Close,volume\n2024-01-02,1,10,9,5\n2024-01-01,1,11,10,5\n")
    df = load_prices(p)
    assert list(df["Close"]) == [11.0, 10.0] and "Adj Close" in df.columns

def test_seed_file_name_is_found(tmp_path):
    synthetic_prices(400).to_csv(tmp_path / "BTC-USD_2014-09-17_2025-12-31_1d.csv")
    df = load_btc(data_dir=tmp_path)
    assert df.attrs["source"].startswith("BTC-USD_2014-09-17_2025-12-31_1d.csv (sha256:")

def test_synthetic_fallback_is_loud_and_labeled(tmp_path):
    with pytest.warns(UserWarning, match="SYNTHETIC"): df = load_btc(data_dir=tmp_path)
    assert df.attrs["source"].startswith(SYNTHETIC_SOURCE)
    with pytest.raises(ValueError, match="no BTC-USD"): load_btc(data_dir=tmp_path, synthetic_ok=False)

def test_normalization_has_no_lookahead(btc_csv):
    btc = load_prices(btc_csv); splits = make_splits(btc.index)
    r = {"BTC-USD": log_returns(btc), "SYN": log_returns(synthetic_prices(len(btc), start=str(btc.index[0].date())))}
    n1 = fit_normalizer(r, splits.train_end)
    changed = btc.copy(); changed.loc[changed.index > splits.train_end, "Close"] *= np.linspace(0.1, 50, int((changed.index > splits.train_end).sum()))
    n2 = fit_normalizer({**r, "BTC-USD": log_returns(changed)}, splits.train_end)
    assert n1 == n2
    n3 = fit_normalizer({**r, "BTC-USD": log_returns(changed)}, splits.test_end)
    assert n3 != n1                                                            # the test can fail: later data does move the stats

def test_splits_are_ordered_with_gaps():
    dates = pd.date_range("2014-09-18", "2024-12-31")
    s = make_splits(dates, gap_days=160)
    assert s.test_start == pd.Timestamp("2024-01-02") and s.test_end == pd.Timestamp("2024-12-31")
    assert (s.test_start - s.val_end).days - 1 >= 160 and (s.val_start - s.train_end).days - 1 >= 160
    assert (s.val_end - s.val_start).days + 1 == 365
    with pytest.raises(ValueError, match="too few rows"): make_splits(dates[-900:], gap_days=160)

def test_download_with_recorded_response(tmp_path):
    def recorded(ticker, **kw):
        assert kw["interval"] == "1d"
        idx = pd.DatetimeIndex(pd.date_range("2024-03-01", periods=5), name="Date")
        cols = pd.MultiIndex.from_product([["Close", "High", "Low", "Open", "Volume"], [ticker]], names=["Price", "Ticker"])
        return pd.DataFrame(np.arange(1, 26, dtype=float).reshape(5, 5), idx, cols)
    p = download_prices("ETH-USD", "2024-03-01", None, tmp_path, downloader=recorded)
    assert p.name == "ETH-USD_2024-03-01_2024-03-05_1d.csv"
    assert load_prices(p)["Close"].tolist() == [1.0, 6.0, 11.0, 16.0, 21.0]
    with pytest.raises(ValueError, match="no data returned"):
        download_prices("NOPE", data_dir=tmp_path, downloader=lambda t, **kw: pd.DataFrame())
