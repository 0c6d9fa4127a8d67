"""The sharding planner, its cost model and `npdlrm plan`.

The exchanged bytes the cost model predicts are checked against a real DistributedDLRM
step on 2 and 3 ranks (tests/mpi/planner_bytes.py under mpiexec)."""
import json

import h5py
import numpy as np
import pytest

from mpirun import run_mpi
from npdlrm import DLRM, DLRMConfig
from npdlrm.cli import main
from npdlrm.data.h5data import write_root_attrs
from npdlrm.parallel import KINDS, ShardingPlan, uniform_plan
from npdlrm.parallel.costs import (CRITEO_1TB_TABLES, criteo_1tb_config, exchange_elements,
                                   format_bytes, mlp_parameters, parse_bytes, plan_costs,
                                   table_memory)
from npdlrm.parallel.planner import make_plan
from npdlrm.parallel.scaling import scaling_table

KAGGLE = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
          27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
KAGGLE_FLAGS = ["--arch-embedding-size", "-".join(map(str, KAGGLE)),
                "--arch-sparse-feature-size", "16", "--arch-mlp-bot", "13-512-256-64-16",
                "--arch-mlp-top", "512-256-1", "--mini-batch-size", "2048"]
ODD = (1, 2, 3, 7, 13, 999, 12345, 5, 100003)  # fewer rows than ranks, primes


def config(sizes=KAGGLE, D=16, **kw):
    return DLRMConfig(table_sizes=sizes, embedding_dim=D, bottom_mlp=(13, 32, D),
                      top_mlp=(8, 1), **kw)


def kaggle():
    return config(KAGGLE, 16)


# ---- make_plan ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("W", [1, 2, 3, 5])
def test_a_kind_for_every_table_is_the_uniform_plan(kind, W):
    c = config(ODD, 7)
    assert make_plan(c, W, kind, batch_size=37) == uniform_plan(W, ODD, 7, kind)


def test_overrides_are_respected_and_the_rest_planned():
    c = kaggle()
    plan = make_plan(c, 4, "2:row,11:column,8:table,3:replicate", batch_size=2048)
    kinds = {p.table: p.kind for p in plan.placements}
    assert (kinds[2], kinds[11], kinds[8], kinds[3]) == ("row", "column", "table", "replicate")
    assert plan.placements[2].ranks == (0, 1, 2, 3) == plan.placements[11].ranks
    assert len(plan.placements[8].ranks) == 1
    # the rest is the planner's: a tiny table replicated, a big one sharded (not rows:
    # memory is unlimited)
    assert kinds[5] == "replicate" and kinds[20] in ("table", "column")
    assert "row" not in [kinds[k] for k in range(len(KAGGLE)) if k not in (2, 11, 8, 3)]


@pytest.mark.parametrize("W", range(1, 9))
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rwsadagrad"])
def test_every_plan_validates(W, optimizer):
    c = config(ODD, 7)
    for B in (1, 37, 4096):
        for sharding in ("auto", "0:row,5:column", "8:replicate,1:table"):
            plan = make_plan(c, W, sharding, optimizer, batch_size=B,
                             lookups_per_sample=[1, 2, 3, 1, 1, 4, 1, 1, 2])
            # the constructor checks ranks and coverage; rebuild it from plain data
            assert ShardingPlan.from_dict(plan.to_dict()) == plan
            assert plan.world_size == W and plan.table_sizes == ODD


def test_a_world_of_one_puts_every_table_on_rank_0():
    plan = make_plan(kaggle(), 1, batch_size=2048)
    assert plan == uniform_plan(1, KAGGLE, 16, "table")


@pytest.mark.parametrize("W", range(2, 17))
def test_memory_and_exchange_are_balanced_on_the_kaggle_shapes(W):
    c = kaggle()
    plan = make_plan(c, W, batch_size=2048)
    mem = table_memory(plan, c, "sgd")
    assert mem.max() / mem.mean() <= (1.25 if W <= 5 else 2.0)
    rr = table_memory(uniform_plan(W, KAGGLE, 16, "table"), c, "sgd")
    assert mem.max() <= 1.05 * rr.max()  # round-robin is up to 1.9 x the mean here
    sent = [r.alltoall_forward + r.alltoall_backward for r in plan_costs(plan, c, 2048).ranks]
    assert max(sent) / np.mean(sent) <= 1.35


def test_tiny_tables_are_replicated():
    c = kaggle()
    plan = make_plan(c, 4, batch_size=2048)  # 512 samples per rank
    replicated = set(plan.replicated)
    assert replicated == {k for k, v in enumerate(KAGGLE) if v <= 512}
    # a float16 exchange is cheaper: fewer tables are worth replicating
    half = make_plan(c, 4, batch_size=2048, alltoall_bytes=2)
    assert set(half.replicated) == {k for k, v in enumerate(KAGGLE) if v <= 256}


def test_replication_stays_within_memory():
    c = config((100, 200, 50_000), 16)
    free = make_plan(c, 4, batch_size=4096)  # 1024 samples per rank
    assert set(free.replicated) == {0, 1}
    # replicas cost 2 x V x D x 4 bytes (weights + dense gradient) on every rank: 12,800
    # and 25,600 B; table 2 needs 800,000 B per rank (3.2 MB over 4 ranks)
    tight = make_plan(c, 4, batch_size=4096, memory_per_rank=820_000)
    assert set(tight.replicated) == {0}
    assert tight.placements[2].kind == "row" and len(tight.placements[2].ranks) == 4


def test_a_huge_table_goes_row_wise_when_memory_forces_it():
    c = config((10_000_000, 1000, 50, 7), 16)
    cap = parse_bytes("200MiB")  # the big table is 610 MiB: it needs 4 ranks
    plan = make_plan(c, 4, batch_size=2048, memory_per_rank=cap)
    big = plan.placements[0]
    assert big.kind == "row" and len(big.ranks) == 4
    assert table_memory(plan, c, "sgd").max() <= cap
    assert make_plan(c, 4, batch_size=2048).placements[0].kind != "row"  # no limit, no rows
    with pytest.raises(ValueError, match="table 0 .* does not fit"):
        make_plan(c, 2, batch_size=2048, memory_per_rank=cap)
    with pytest.raises(ValueError, match="rank 0 would hold"):
        make_plan(c, 4, "table", batch_size=2048, memory_per_rank=cap)


def test_dominant_tables_are_split_column_wise():
    c = config((5_000_000, 100_000, 90_000), 16)
    plan = make_plan(c, 4, batch_size=64)
    assert plan.placements[0].kind == "column" and len(plan.placements[0].ranks) > 1
    mem = table_memory(plan, c, "sgd")
    assert mem.max() / mem.mean() < 1.5


def test_the_plan_is_deterministic():
    c = criteo_1tb_config()
    for W in (3, 8, 64):
        a = make_plan(c, W, batch_size=W * 1024, optimizer="rwsadagrad")
        b = make_plan(c, W, batch_size=W * 1024, optimizer="rwsadagrad")
        assert a == b and a.to_dict() == b.to_dict()


@pytest.mark.parametrize("kwargs, message", [
    ({"world_size": 0}, "world_size must be a positive integer, got 0"),
    ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
    ({"optimizer": "adam"}, "optimizer must be one of .* got 'adam'"),
    ({"sharding": "99:row"}, "table 99 does not exist"),
    ({"sharding": "rows"}, "got 'rows'"),
    ({"lookups_per_sample": [1, 2]}, "expected one value or 26 .* got 2"),
    ({"lookups_per_sample": -1}, "must be finite and >= 0, got -1"),
    ({"lookups_per_sample": "many"}, "expected a number or one per table, got 'many'"),
    ({"memory_per_rank": 0}, "memory_per_rank must be positive bytes, got 0"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    args = {"world_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_plan(kaggle(), args.pop("world_size"), **args)


# ---- the cost model -------------------------------------------------------------------
def test_exchange_elements_is_the_sum_of_the_blocks():
    widths, samples = np.array([5, 0, 7, 2]), np.array([3, 3, 2, 2])
    block = np.outer(widths, samples)  # block[s, r]: s sends r forward
    np.fill_diagonal(block, 0)
    forward, backward = exchange_elements(widths, samples)
    assert forward.tolist() == block.sum(axis=1).tolist()
    assert backward.tolist() == block.sum(axis=0).tolist()


def test_costs_of_a_plan():
    c = config((1000, 4, 300, 77), 8)
    plan = make_plan(c, 3, "0:column,2:row,1:replicate,3:table", "adagrad", batch_size=10)
    costs = plan_costs(plan, c, 10, "adagrad", lookups_per_sample=2, link_gbps=8,
                       latency_us=0)
    P = mlp_parameters(c)
    assert P == DLRM(c, init="none").params.size
    N = P + 4 * 8  # the replicated table's V x D
    assert costs.allreduce_elements == N
    for r in costs.ranks:
        assert r.allreduce == pytest.approx(2 * 2 / 3 * N * 4)
        assert r.mlp_bytes == r.mlp_state_bytes == P * 4  # adagrad on the MLPs too
        assert r.seconds["allreduce"] == pytest.approx(r.allreduce * 8 / 8e9)
        assert r.seconds["forward"] == pytest.approx(
            max(r.alltoall_forward, r.alltoall_backward) * 8 / 8e9)
    assert sum(r.table_bytes for r in costs.ranks) == (1000 + 3 * 4 + 300 + 77) * 8 * 4
    assert sum(r.table_bytes for r in costs.ranks) == sum(r.table_state_bytes
                                                          for r in costs.ranks)
    # rank 0 samples 0-3: 4 samples x 2 entries of the replicated table; every shard of
    # table 0 (column) pools all 20 entries; rows of table 2 their expected share
    expected = {r: 4 * 2 if r == 0 else 3 * 2 for r in range(3)}
    for r in range(3):
        expected[r] += 20  # table 0's column shard
        expected[r] += 20 * (plan.placements[2].shards[r].shape[0] / 300)
    owner = plan.placements[3].ranks[0]
    expected[owner] += 20
    assert [r.lookups for r in costs.ranks] == pytest.approx([expected[r] for r in range(3)])


def test_costs_refuse_a_plan_of_other_tables():
    plan = make_plan(config((10, 20), 4), 2, batch_size=8)
    with pytest.raises(ValueError, match="the plan is for tables"):
        plan_costs(plan, config((10, 21), 4), 8)
    with pytest.raises(ValueError, match="link_gbps must be positive, got 0"):
        plan_costs(plan, config((10, 20), 4), 8, link_gbps=0)


def test_one_rank_moves_nothing():
    c = kaggle()
    costs = plan_costs(make_plan(c, 1), c, 2048, link_gbps=100)
    r = costs.ranks[0]
    assert (r.alltoall_forward, r.alltoall_backward, r.allreduce) == (0, 0, 0)
    assert costs.seconds() == {"forward": 0, "backward": 0, "allreduce": 0,
                               "column_allreduce": 0}


def test_rowwise_adagrad_on_column_shards_reduces_row_sums():
    c = config((50, 100_000), 8)
    plan = make_plan(c, 2, "column", batch_size=64)
    sgd = plan_costs(plan, c, 64, "sgd")
    rws = plan_costs(plan, c, 64, "rwsadagrad")
    assert all(r.column_allreduce == 0 for r in sgd.ranks)
    # U <= min(V, nnz): 50 rows for table 0, 64 entries for table 1; ring of 2: U x 4 B
    assert [r.column_allreduce for r in rws.ranks] == [(50 + 64) * 4] * 2


@pytest.fixture(scope="module", params=[2, 3])
def measured(request):
    proc = run_mpi(request.param, ["tests/mpi/planner_bytes.py"], timeout=120)
    return request.param, json.loads(proc.stdout.strip().splitlines()[-1])


def test_predicted_exchange_bytes_equal_a_real_step(measured):
    W, cases = measured
    assert len(cases) == 8
    for case in cases:
        name, c = case["name"], DLRMConfig.from_dict(case["config"])
        plan = ShardingPlan.from_dict(case["plan"])
        assert case["same_plan"], f"{name}: the ranks made different plans"
        kwargs = dict(case["make_plan"])
        assert make_plan(c, W, **kwargs) == plan, f"{name}: another process, another plan"
        costs = plan_costs(plan, c, kwargs["batch_size"], kwargs.get("optimizer", "sgd"),
                           alltoall_bytes=case["wire_bytes"])
        predicted = [{"forward": r.alltoall_forward, "backward": r.alltoall_backward}
                     for r in costs.ranks]
        assert predicted == case["sent"], name
    by_name = {case["name"]: case for case in cases}
    table = by_name["table"]["sent"]
    assert all(s["forward"] > 0 for s in table)  # the test can fail: bytes really move
    assert len({s["forward"] for s in by_name["row"]["sent"]}) > 1  # uneven batch
    assert all(s == {"forward": 0, "backward": 0} for s in by_name["replicate"]["sent"])
    kinds = [p["kind"] for p in by_name["memory"]["plan"]["placements"]]
    assert kinds[6] == "row"  # memory_per_rank forced the 2000-row table row-wise


# ---- the scaling model ----------------------------------------------------------------
def test_criteo_1tb_shapes():
    c = criteo_1tb_config()
    assert len(CRITEO_1TB_TABLES) == 26 and c.embedding_dim == 128
    assert c.top_sizes == (479, 1024, 1024, 512, 256, 1)  # 351 pairs + 128


def test_scaling_table_weak_and_strong():
    rows = scaling_table(100)
    assert [r.world_size for r in rows] == [8, 64, 512, 4096]
    assert [r.global_batch for r in rows] == [8 * 2048, 64 * 2048, 512 * 2048, 4096 * 2048]
    for r in rows:
        assert 0 < r.comm_share < 1
        assert r.step == pytest.approx(r.compute + r.alltoall + r.allreduce)
        assert sum(r.kinds.values()) == 26
    slow = scaling_table(1, world_sizes=(8,))[0]
    assert slow.alltoall > 50 * rows[0].alltoall  # 100 x less bandwidth
    strong = scaling_table(100, world_sizes=(8, 64), global_batch=65536)
    assert [r.global_batch for r in strong] == [65536, 65536]
    assert strong[1].compute < strong[0].compute and strong[1].comm_share > strong[0].comm_share


def test_units():
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024 ** 3) == "3.0 GiB"
    assert parse_bytes("16GiB") == 16 * 1024 ** 3 and parse_bytes("512 MiB") == 512 * 1024 ** 2
    assert parse_bytes("1000") == 1000
    for bad in ("lots", "-1GiB", "3 parsecs"):
        with pytest.raises(ValueError, match="size"):
            parse_bytes(bad)


# ---- npdlrm plan ----------------------------------------------------------------------
def plan_cli(capsys, *flags):
    code = main(["plan", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_plan_and_the_costs(capsys):
    code, out, err = plan_cli(capsys, "--world-size", "4", *KAGGLE_FLAGS)
    assert code == 0, err
    lines = out.splitlines()
    assert "26 tables of width 16 on 4 ranks, global batch 2,048" in lines[0]
    row2 = next(line.split() for line in lines if line.split()[:2] == ["2", "10,131,227"])
    assert row2[2] == "table"
    header = next(line for line in lines if line.startswith("rank"))
    assert "a2a fwd sent" in header and "fwd time" not in header
    for r in range(4):
        assert any(line.split()[0] == str(r) and "MiB" in line
                   for line in lines[lines.index(header) + 1:])
    assert "Scaling" not in out


def test_cli_link_speed_adds_times_and_the_scaling_table(capsys):
    code, out, err = plan_cli(capsys, "--world-size", "4", *KAGGLE_FLAGS, "--link-gbps", "100")
    assert code == 0, err
    assert "fwd time" in out and "at 100 Gbit/s per rank" in out
    assert "Scaling of the Criteo 1TB model" in out and "weak scaling" in out
    table = out[out.index("ranks  global batch"):].splitlines()[1:]
    assert [line.split()[0] for line in table] == ["8", "64", "512", "4096"]


def test_cli_forced_kinds_and_float16(capsys):
    code, out, _ = plan_cli(capsys, "--world-size", "3", *KAGGLE_FLAGS, "--sharding", "row")
    assert code == 0 and out.count("row x3") == 26
    code, out, _ = plan_cli(capsys, "--world-size", "3", *KAGGLE_FLAGS,
                            "--alltoall-dtype", "float16")
    assert code == 0 and "float16 all-to-all" in out and "values of 2 B" in out


def test_cli_large_worlds_print_a_summary_of_the_ranks(capsys):
    code, out, _ = plan_cli(capsys, "--world-size", "100", *KAGGLE_FLAGS)
    assert code == 0
    labels = [line.split()[0] for line in out[out.index("\nrank"):].splitlines()[2:5]]
    assert labels == ["min", "mean", "max"]


def test_cli_reads_table_sizes_from_the_processed_file(capsys, tmp_path):
    path = tmp_path / "kaggle.h5"
    sizes = [11 + k for k in range(26)]
    with h5py.File(path, "w") as f:
        write_root_attrs(f, "kaggle", sizes, [10] * 7, 10, [], {})
    flags = ["--data-generation", "dataset", "--processed-data-file", str(path),
             "--arch-sparse-feature-size", "4", "--arch-mlp-bot", "13-4", "--world-size", "2"]
    code, out, err = plan_cli(capsys, *flags)
    assert code == 0, err
    assert "1 lookups per sample" in out
    assert any(line.split()[:2] == ["25", "36"] for line in out.splitlines())
    code, _, err = plan_cli(capsys, *flags[:3], str(tmp_path / "missing.h5"), *flags[4:])
    assert code == 2 and "missing.h5 does not exist" in err


def test_cli_config_file_and_the_command_line_wins(capsys, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"arch-embedding-size": "100-200-300",
                               "mini-batch-size": 64, "sharding": "column"}))
    code, out, _ = plan_cli(capsys, "--config", str(cfg), "--world-size", "2",
                            "--mini-batch-size", "32")
    assert code == 0
    assert "3 tables of width 2 on 2 ranks, global batch 32" in out
    assert out.count("column x2") == 3


@pytest.mark.parametrize("flags, message", [
    (["--world-size", "0"], "--world-size must be positive, got 0"),
    (["--world-size", "2", "--sharding", "7:row"], "table 7 does not exist"),
    (["--world-size", "2", "--mini-batch-size", "0"], "--mini-batch-size must be positive"),
    (["--world-size", "2", "--arch-embedding-size", "1000000", "--memory-per-rank", "1MiB"],
     "does not fit"),
    (["--world-size", "2", "--qr-flag"], "--qr-flag"),
])
def test_cli_bad_values_give_a_clear_error(capsys, flags, message):
    code, out, err = plan_cli(capsys, *flags)
    assert code == 2 and out == ""
    assert err.startswith("npdlrm plan: error:") and message in err


@pytest.mark.parametrize("flags, message", [
    ([], "the following arguments are required: --world-size"),
    (["--world-size", "two"], "invalid int value: 'two'"),
    (["--world-size", "2", "--memory-per-rank", "lots"], "expected a size like 16GiB"),
    (["--world-size", "2", "--shardin", "row", "--bogus"], "unrecognized arguments"),
])
def test_cli_bad_flags_give_a_usage_error(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["plan", *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
