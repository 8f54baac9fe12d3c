"""The report's tables hold the right counts, rates, intervals and margins for a hand-made store.

Rates are per evaluation (the mean over faults of each fault's rate over its 4 inputs), with
intervals over faults: the betting interval for a group inside one target, the size-weighted
combination of the targets' intervals for a group spanning targets."""

import csv
import math

import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.results.intervals import (
    fault_mean_interval,
    share_interval,
    stratified_interval,
)
from classes_tool.results.report import heatmap_data, heatmap_file_name, plot_heatmap, write_report
from classes_tool.results.store import ResultStore

PNG = b"\x89PNG\r\n\x1a\n"

# fault: (target, pattern, params, [(outcome, sdc5, rel_error) per input 0..3])
M, T, C, D = "masked", "tolerable_sdc", "critical_sdc", "due"
NAN = math.nan
CAMPAIGN = {
    0: ("conv", "line", {"x": 0, "y": 0}, [(M, 0, 0.0), (M, 0, 0.0), (T, 0, 3.0), (C, 1, 50.0)]),
    1: ("conv", "line", {"x": 1, "y": 0}, [(C, 0, 7.0), (C, 0, 12.0), (D, 1, NAN), (M, 0, 0.0)]),
    2: ("conv", "block", {"x": 0, "y": 1}, [(M, 0, 0.0)] * 4),
    3: ("dense", "block", {"bit": 5}, [(T, 0, 12.0), (T, 0, 25.0), (D, 1, NAN), (M, 0, 1e-7)]),
}
META = {"seed": 3, "population": {"conv": 30, "dense": 10}, "confidence": 0.99}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.db"
    with ResultStore(path, META) as st:
        for fi, (target, pattern, params, rows) in CAMPAIGN.items():
            st.add([{"fault_index": fi, "target": target, "pattern": pattern, "params": params}],
                   [{"fault_index": fi, "input_index": ii, "outcome": o, "sdc5": s,
                     "rel_error": e, "golden_top1": 0, "faulty_top1": 0, "label": 0}
                    for ii, (o, s, e) in enumerate(rows)])
    return path


def read_csv(path):
    with open(path, newline="") as fh:
        return {row[next(iter(row))]: row for row in csv.DictReader(fh)}


def expected(faults, outcome, confidence=0.99):
    """(rate, low, high, fault share low, high) the report must print for these faults."""
    by_target = {}
    for fi in faults:
        by_target.setdefault(CAMPAIGN[fi][0], []).append(fi)
    per, share, sizes = [], [], []
    for target_faults in by_target.values():
        rows = [CAMPAIGN[fi][3] for fi in target_faults]
        hits = np.array([sum((s if outcome == "sdc5" else o == outcome) for o, s, _ in r)
                         for r in rows])
        per.append(fault_mean_interval(hits / 4, 4, confidence))
        share.append(share_interval(hits > 0, confidence))
        sizes.append(len(target_faults))
    if len(per) == 1:
        return per[0], share[0]
    return stratified_interval(per, sizes), stratified_interval(share, sizes)


def check_row(row, faults, counts, sdc5):
    n = sum(counts.values())
    assert int(row["faults"]) == len(faults) and int(row["evaluations"]) == n
    for outcome, k in [*counts.items(), ("sdc5", sdc5)]:
        per, share = expected(faults, outcome)
        assert int(row[outcome]) == k
        assert float(row[f"{outcome}_rate"]) == pytest.approx(k / n)  # every fault complete
        assert float(row[f"{outcome}_ci_low"]) == pytest.approx(per.low)
        assert float(row[f"{outcome}_ci_high"]) == pytest.approx(per.high)
        assert float(row[f"{outcome}_fault_ci_low"]) == pytest.approx(share.low)
        assert float(row[f"{outcome}_fault_ci_high"]) == pytest.approx(share.high)
        assert float(row[f"{outcome}_ci_low"]) < k / n < float(row[f"{outcome}_ci_high"]) or (
            k in (0, n))


def test_tables_hold_the_right_numbers(db, tmp_path):
    files = write_report(db, tmp_path / "rep", group_params=("x",))
    by_target = read_csv(files["by_target.csv"])
    assert list(by_target) == ["conv", "dense"]  # campaign order
    check_row(by_target["conv"], [0, 1, 2], {M: 7, T: 1, C: 3, D: 1}, sdc5=2)
    check_row(by_target["dense"], [3], {M: 1, T: 2, C: 0, D: 1}, sdc5=1)
    # margin achieved: the largest half-width of the four outcome intervals
    for target, faults in (("conv", [0, 1, 2]), ("dense", [3])):
        assert float(by_target[target]["margin_achieved"]) == pytest.approx(
            max(expected(faults, o)[0].half_width for o in (M, T, C, D)))
    assert by_target["conv"]["population"] == "30"
    # per-fault rates: conv faults 0 and 1 have a critical SDC, fault 2 none
    assert float(by_target["conv"]["critical_sdc_fault_rate"]) == pytest.approx(2 / 3)
    assert by_target["conv"]["critical_sdc_faults_hit"] == "2"

    by_pattern = read_csv(files["by_pattern.csv"])
    check_row(by_pattern["line"], [0, 1], {M: 3, T: 1, C: 3, D: 1}, sdc5=2)
    check_row(by_pattern["block"], [2, 3], {M: 5, T: 2, C: 0, D: 1}, sdc5=1)

    by_x = read_csv(files["by_param_x.csv"])
    assert list(by_x) == ["0", "1", "(absent)"]
    check_row(by_x["0"], [0, 2], {M: 6, T: 1, C: 1, D: 0}, sdc5=1)
    check_row(by_x["1"], [1], {M: 1, T: 0, C: 2, D: 1}, sdc5=1)

    md = files["by_target.md"].read_text()
    per, _ = expected([0, 1, 2], C)
    assert "99% intervals over faults" in md
    assert "| conv | 3 | 12 | 58.33% [" in md
    assert f"25.00% [{100 * per.low:.2f}, {100 * per.high:.2f}]" in md  # critical SDC of conv


def test_summary_reads_first(db, tmp_path):
    files = write_report(db, tmp_path / "rep")
    text = files["summary.md"].read_text()
    assert "- faults injected: 4" in text
    assert "- inputs: 4" in text
    assert "- evaluations (fault x input): 16" in text
    per, _ = expected([0, 1, 2, 3], C)
    assert f"| critical SDC | 3 | 18.75% | [{100 * per.low:.2f}%, {100 * per.high:.2f}%] |" in text
    assert "| SDC-5 | 3 | 18.75% |" in text
    margin = 100 * max(expected([0, 1, 2], o)[0].half_width for o in (M, T, C, D))
    assert f"±{margin:.2f}%" in text
    assert "## How the intervals were computed" in text
    assert "faults drawn independently" in text and "inputs a fixed set" in text
    assert "## Per-fault rates" in text
    # buckets: 0-5: 0,0,3,0,0,0,0,0,1e-7 -> 9; 5-10: 7 -> 1; 10-20: 12,12 -> 2; >20: 50,25 -> 2
    for bucket, count in [("0-5%", 9), ("5-10%", 1), ("10-20%", 2), (">20%", 2), ("due", 2)]:
        assert f"| {bucket} | {count} | {100 * count / 16:.2f}% |" in text
    for name in files:
        if name != "summary.md":
            assert f"]({name})" in text


def test_pngs_are_written(db, tmp_path):
    files = write_report(db, tmp_path / "rep")
    for name in ("outcomes_by_target.png", "rel_error.png"):
        assert files[name].read_bytes()[:8] == PNG
    heat = plot_heatmap(db, "x", "y", tmp_path / "heat.png")
    assert heat.read_bytes()[:8] == PNG
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temps


def test_heatmap_rates(db):
    xs, ys, rates, counts = heatmap_data(db, "x", "y", "critical_sdc")
    assert xs == [0, 1] and ys == [0, 1]
    # (x=0,y=0): fault 0, 1 critical of 4; (x=1,y=0): fault 1, 2 of 4; (x=0,y=1): fault 2, 0 of 4
    np.testing.assert_allclose(rates, [[25.0, 50.0], [0.0, np.nan]])
    assert counts.tolist() == [[4, 4], [4, 0]]
    _, _, sdc5, _ = heatmap_data(db, "x", "y", "sdc5")
    np.testing.assert_allclose(sdc5, [[25.0, 25.0], [0.0, np.nan]])


def test_user_errors(db, tmp_path):
    with pytest.raises(UserError, match="no fault has the param 'nope'; params present: bit, x, y"):
        write_report(db, tmp_path / "rep", group_params=("nope",))
    with pytest.raises(UserError, match="not found"):
        write_report(tmp_path / "missing.db", tmp_path / "rep")
    with pytest.raises(UserError, match="both params"):
        plot_heatmap(db, "x", "bit", tmp_path / "h.png")
    with pytest.raises(UserError, match="unknown outcome"):
        plot_heatmap(db, "x", "y", tmp_path / "h.png", outcome="sdc")


def test_empty_store_still_reports(tmp_path):
    ResultStore(tmp_path / "empty.db", {"seed": 1}).close()
    files = write_report(tmp_path / "empty.db", tmp_path / "rep")
    assert "No results stored yet." in files["summary.md"].read_text()
    assert files["outcomes_by_target.png"].read_bytes()[:8] == PNG
    assert files["rel_error.png"].read_bytes()[:8] == PNG


def test_an_explicit_confidence_overrides_the_campaigns(db, tmp_path):
    files = write_report(db, tmp_path / "rep", confidence=0.9)
    row = read_csv(files["by_target.csv"])["conv"]
    per, _ = expected([0, 1, 2], C, confidence=0.9)
    assert float(row["critical_sdc_ci_low"]) == pytest.approx(per.low)
    assert float(row["critical_sdc_ci_high"]) == pytest.approx(per.high)
    assert "90% intervals over faults" in files["by_target.md"].read_text()


# -- bad options: one-line errors, checked before anything is written -------------------------------

def report_cli(db, out, *options):
    from classes_tool.cli import main

    return main(["report", str(db), "-o", str(out), *map(str, options)])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else None


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "notes.h5").write_text("not JSON at all\n")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe" * 8)
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "row.json").write_text('{"conv1": {"target": "conv1"}}')
    return tmp_path


BAD_OPTIONS = [
    (["--heatmap", "x", "nope"], "no results have both params 'x' and 'nope'; params present: "
                                 "bit, x, y"),
    (["--heatmap", "x", "y", "--outcome", "nosuch"], "unknown outcome 'nosuch'; choose one of "
                                                     "masked, tolerable_sdc, critical_sdc, due, "
                                                     "sdc5"),
    (["--outcome", "nosuch"], "unknown outcome 'nosuch'"),
    (["--group-param", "nope"], "no fault has the param 'nope'"),
    (["--statistics", "{tmp}/missing.json"], "statistics file {tmp}/missing.json not found"),
    (["--statistics", "{tmp}/notes.h5"], "notes.h5 is not a fault-statistics JSON file"),
    (["--statistics", "{tmp}/model.h5"], "model.h5 is not a fault-statistics JSON file: not UTF-8"),
    (["--statistics", "{tmp}/list.json"], "list.json is not a fault-statistics JSON file"),
    (["--statistics", "{tmp}/row.json"], "row.json is not a fault-statistics JSON file: no 'seen'"),
    (["--heatmap", "x", "y", "--statistics", "{tmp}"], "cannot read statistics file"),
]
BAD_IDS = ["heatmap-param", "heatmap-outcome", "outcome", "group-param", "stats-missing",
           "stats-text", "stats-binary", "stats-list", "stats-row", "stats-folder"]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=BAD_IDS)
def test_a_bad_option_writes_no_report(db, bad_inputs, capsys, options, message):
    """Every option is checked before the first file is written: the QA pass found all seven
    report files in place after `--heatmap x nope` or `--statistics missing.json` failed."""
    tmp = bad_inputs
    options = [o.format(tmp=tmp) for o in options]
    assert report_cli(db, tmp / "rep", *options) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("classes-tool: error: ")
    assert message.format(tmp=tmp) in err
    assert not (tmp / "rep").exists()


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS[:2] + BAD_OPTIONS[4:6],
                         ids=BAD_IDS[:2] + BAD_IDS[4:6])
def test_a_bad_option_leaves_an_old_report_as_it_was(db, bad_inputs, capsys, options, message):
    """No old file of the target folder is replaced when a later option turns out bad."""
    tmp = bad_inputs
    assert report_cli(db, tmp / "rep", "--group-param", "x") == 0
    (tmp / "rep" / "mine.txt").write_text("the user's own file")
    before = snapshot(tmp / "rep")
    with ResultStore(db) as st:  # new results: a new report would differ from the old one
        st.add([{"fault_index": 9, "target": "dense", "pattern": "line", "params": {"x": 5}}],
               [{"fault_index": 9, "input_index": 0, "outcome": C, "sdc5": 1, "rel_error": 90.0,
                 "golden_top1": 0, "faulty_top1": 1, "label": 0}])
    capsys.readouterr()
    assert report_cli(db, tmp / "rep", *(o.format(tmp=tmp) for o in options)) == 2
    assert message.format(tmp=tmp) in capsys.readouterr().err
    assert snapshot(tmp / "rep") == before


def test_the_api_checks_before_writing(db, tmp_path):
    """`write_report` itself is all or nothing (the CLI only passes the options on)."""
    with pytest.raises(UserError, match="both params 'x' and 'bit'"):
        write_report(db, tmp_path / "rep", heatmap=("x", "bit"))
    with pytest.raises(UserError, match="statistics file .* not found"):
        write_report(db, tmp_path / "rep", statistics=[tmp_path / "missing.json"])
    with pytest.raises(UserError, match="unknown outcome 'sdc'"):
        write_report(db, tmp_path / "rep", heatmap=("x", "y"), outcome="sdc")
    assert not (tmp_path / "rep").exists()
    (tmp_path / "rep" / "summary.md").mkdir(parents=True)  # a folder where a file goes
    with pytest.raises(UserError, match="summary.md is a folder"):
        write_report(db, tmp_path / "rep")
    assert [p.name for p in (tmp_path / "rep").iterdir()] == ["summary.md"]


# -- --outcome belongs to the heat map -----------------------------------------------------------

def test_outcome_without_a_heatmap_is_an_error(db, tmp_path, capsys):
    """--outcome only picks what the heat map shows; without --heatmap it used to be ignored
    silently (rc 0), even for a name that is no outcome at all."""
    assert report_cli(db, tmp_path / "rep", "--outcome", "due") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--heatmap X Y" in err
    assert not (tmp_path / "rep").exists()
    with pytest.raises(UserError, match="heat map"):
        write_report(db, tmp_path / "rep", outcome="due")
    with pytest.raises(UserError, match="unknown outcome 'nosuch'; choose one of masked"):
        write_report(db, tmp_path / "rep", outcome="nosuch")


# -- heat map names ------------------------------------------------------------------------------

def test_heatmaps_of_two_outcomes_do_not_overwrite_each_other(db, tmp_path, capsys):
    """The outcome is part of the heat map's name, as in the systolic campaign's
    pe_heatmap_critical_sdc.png; the summary links the heat map."""
    assert report_cli(db, tmp_path / "rep", "--heatmap", "x", "y") == 0
    assert report_cli(db, tmp_path / "rep", "--heatmap", "x", "y", "--outcome", "due") == 0
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"heatmap_x_y_critical_sdc.png", "heatmap_x_y_due.png"} <= names
    assert not {n for n in names if n.startswith(".") or n == "heatmap_x_y.png"}
    assert (tmp_path / "rep" / "heatmap_x_y_due.png").read_bytes()[:8] == PNG
    assert "[heatmap_x_y_due.png](heatmap_x_y_due.png)" in (
        tmp_path / "rep" / "summary.md").read_text()
    files = write_report(db, tmp_path / "api", heatmap=("x", "y"), outcome="sdc5")
    assert files["heatmap_x_y_sdc5.png"] == tmp_path / "api" / "heatmap_x_y_sdc5.png"
    assert heatmap_file_name("layer/x", "y") == "heatmap_layer_x_y_critical_sdc.png"


# -- the campaign settings in summary.md ---------------------------------------------------------

def test_summary_shows_dict_and_list_settings(tmp_path):
    """tolerance, targets and faults_per_target are dicts in the meta; they used to be left out
    of the Campaign section. Long ones are cut after a dozen items, with a count."""
    meta = {**META, "tolerance": {"atol": 1e-06, "rtol": 1e-05},
            "targets": {"nodes": ["fc1"], "types": ["Conv2D", "Dense"]},
            "faults_per_target": {"conv1": 120, "conv2": 130},
            "layers": [f"l{i}" for i in range(20)], "empty": {}}
    ResultStore(tmp_path / "m.db", meta).close()
    text = write_report(tmp_path / "m.db", tmp_path / "rep")["summary.md"].read_text()
    assert "- tolerance: atol=1e-06, rtol=1e-05\n" in text
    assert "- targets: nodes=[fc1], types=[Conv2D, Dense]\n" in text
    assert "- faults_per_target: conv1=120, conv2=130\n" in text
    assert "- layers: l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, … 8 more\n" in text
    assert "- empty: none\n" in text
    assert "- population: 40 faults over 2 targets\n" in text


def test_a_report_taken_while_a_campaign_writes_describes_one_snapshot(db, tmp_path,
                                                                       monkeypatch):
    """A campaign that commits between the report's first read and its CSV changes neither:
    the tables, the summary and the CSV all count the rows there were at the first read."""
    import classes_tool.results.report as report

    real_render = report._render

    def render_while_a_batch_commits(*args, **kwargs):
        with ResultStore(db, META) as writer:  # the live campaign's next batch
            writer.add([{"fault_index": 9, "target": "dense", "pattern": "line", "params": {}}],
                       [{"fault_index": 9, "input_index": i, "outcome": "masked", "sdc5": False,
                         "rel_error": 0.0, "golden_top1": 0, "faulty_top1": 0, "label": 0}
                        for i in range(4)])
        return real_render(*args, **kwargs)

    monkeypatch.setattr(report, "_render", render_while_a_batch_commits)
    files = write_report(db, tmp_path / "rep", csv_path=tmp_path / "rows.csv")
    with open(files["csv"], newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 16
    assert int(read_csv(files["by_target.csv"])["dense"]["evaluations"]) == 4
    assert "- evaluations (fault x input): 16" in files["summary.md"].read_text()
    with ResultStore(db, must_exist=True) as store:
        assert store.count() == 20  # the batch was committed, for the next report


def test_a_snapshot_does_not_see_later_commits(db):
    with ResultStore(db, must_exist=True) as reader, reader.snapshot():
        before = reader.count()
        with ResultStore(db, META) as writer:
            writer.add([{"fault_index": 9, "target": "dense", "pattern": "line", "params": {}}],
                       [{"fault_index": 9, "input_index": 0, "outcome": "masked",
                         "sdc5": False, "rel_error": 0.0, "golden_top1": 0, "faulty_top1": 0}])
        assert reader.count() == before == 16
    with ResultStore(db, must_exist=True) as reader:
        assert reader.count() == 17


@pytest.mark.parametrize("where", ["database", "wal", "report-table", "link-to-database"])
def test_the_csv_never_replaces_the_database_or_a_report_file(db, tmp_path, capsys, where):
    """`--csv results.db` replaced the database with its own CSV export, and `--csv
    rep/by_target.csv` was overwritten by the report's table."""
    rep = tmp_path / "rep"
    csv_path = {"database": db, "wal": f"{db}-wal", "report-table": rep / "by_target.csv",
                "link-to-database": tmp_path / "link.csv"}[where]
    if where == "link-to-database":
        csv_path.symlink_to(db)
    if where == "report-table":
        rep.mkdir()  # the CSV's folder must exist
    before = db.read_bytes()
    assert report_cli(db, rep, "--csv", csv_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("classes-tool: error: ")
    assert ("is the result database" if where != "report-table" else
            "is one of the report's own files") in err
    assert db.read_bytes() == before and not (rep.exists() and any(rep.iterdir()))
    with ResultStore(db, must_exist=True) as store:
        assert store.count() == 16
