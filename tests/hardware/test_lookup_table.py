"""Latency lookup tables: the three file formats, lookup by canonical form, and clear errors."""

import json

import pytest

from nasloop.hardware.lookup import LatencyNotFound, LatencyTable, LatencyTableError, latency_devices
from nasloop.spaces.nb201 import NB201Space

CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
POOL = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
# Only the skip edge 0 -> 3 reaches the output (nodes 1 and 2 have no path to node 3): the same network as SKIP.
DEAD_EDGE = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|none~2|"
SKIP = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # canonical: only the skip edge 0 -> 3 is live


@pytest.fixture
def wide_csv(tmp_path):
    path = tmp_path / "latency.csv"
    path.write_text(f"arch,edgegpu,raspi4\n{CONV},4.5,40.25\n{POOL},1.5,\n{SKIP}, 0.75 ,3\n")
    return path


def test_wide_csv_reads_one_device_per_column(wide_csv):
    table = LatencyTable.load(wide_csv, "edgegpu")
    assert len(table) == 3 and table.latency_ms(CONV) == 4.5 and table.latency_ms(SKIP) == 0.75
    raspberry = LatencyTable.load(wide_csv, "raspi4")
    assert raspberry.latency_ms(CONV) == 40.25 and POOL not in raspberry  # an empty cell: not measured
    assert latency_devices(wide_csv) == ("edgegpu", "raspi4")


def test_long_csv_and_json_hold_the_same_table(tmp_path, wide_csv):
    long_csv = tmp_path / "long.csv"
    long_csv.write_text(
        f"architecture,device,latency_ms\n{CONV},edgegpu,4.5\n{POOL},edgegpu,1.5\n{SKIP},edgegpu,0.75\n"
    )
    as_json = tmp_path / "latency.json"
    as_json.write_text(json.dumps({"edgegpu": {CONV: 4.5, POOL: 1.5, SKIP: 0.75}, "pixel3": {CONV: 9.0}}))
    expected = dict(LatencyTable.load(wide_csv, "edgegpu").entries)
    assert dict(LatencyTable.load(long_csv, "edgegpu").entries) == expected
    assert dict(LatencyTable.load(as_json, "edgegpu").entries) == expected
    assert LatencyTable.load(as_json, "pixel3").latency_ms(CONV) == 9.0


def test_whitespace_is_ignored_and_canonical_forms_are_found(wide_csv):
    spaced = CONV.replace("+", " + ")
    plain = LatencyTable.load(wide_csv, "edgegpu")
    assert plain.latency_ms(spaced) == 4.5
    assert plain.get(DEAD_EDGE) is None  # not listed verbatim, and no canonical function given
    with_space = LatencyTable.load(wide_csv, "edgegpu", canonical=NB201Space().canonical)
    assert with_space.latency_ms(DEAD_EDGE) == 0.75  # found through its canonical form, SKIP


def test_canonical_lookup_prefers_the_entry_written_in_canonical_form(tmp_path):
    path = tmp_path / "latency.csv"
    path.write_text(f"arch,cpu\n{DEAD_EDGE},2.0\n{SKIP},0.5\n")
    table = LatencyTable.load(path, "cpu", canonical=NB201Space().canonical)
    other_dead = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert table.latency_ms(DEAD_EDGE) == 2.0  # listed verbatim: its own measurement
    assert table.latency_ms(other_dead) == 0.5  # unlisted: the network actually rendered, SKIP


def test_a_missing_architecture_names_it_the_device_and_the_file(wide_csv):
    table = LatencyTable.load(wide_csv, "edgegpu")
    missing = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|none~2|"
    with pytest.raises(LatencyNotFound) as error:
        table.latency_ms(missing)
    assert missing in str(error.value) and "edgegpu" in str(error.value) and str(wide_csv) in str(error.value)
    assert table.get(missing) is None and missing not in table


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", f"arch,cpu\n{CONV},fast\n", "not a number"),
        ("b.csv", f"arch,cpu\n{CONV},-1\n", "not negative"),
        ("c.csv", f"arch,cpu\n{CONV},nan\n", "finite"),
        ("d.csv", f"arch,cpu\n{CONV},1\n{CONV},2\n", "listed twice"),
        ("e.csv", "name,cpu\nx,1\n", "no architecture column"),
        ("f.csv", f"arch\n{CONV}\n", "no device columns"),
        ("g.csv", "arch,cpu\n ,1\n", "empty architecture"),
        ("h.json", "[1, 2]", "object of devices"),
        ("i.json", "{not json", "not valid JSON"),
        ("j.txt", "arch,cpu\n", ".csv or .json"),
    ],
)
def test_malformed_tables_are_rejected_with_the_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LatencyTableError, match=message):
        LatencyTable.load(path, "cpu")


def test_unknown_device_and_missing_file(tmp_path, wide_csv):
    with pytest.raises(LatencyTableError, match="edgegpu, raspi4"):
        LatencyTable.load(wide_csv, "fpga")
    with pytest.raises(LatencyTableError, match="not found"):
        LatencyTable.load(tmp_path / "absent.csv", "cpu")
