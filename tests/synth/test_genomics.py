"""The genomics source: VCF 4.2 batches read back with pysam (an independent parser) and checked
against the panel declaration (positions, REF/ALT against the HGVS notation), Hardy-Weinberg and
the declared allele frequencies, the persons' effect-variant allele counts, call metrics, the
biobank's DNA sample ids, and determinism."""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pysam
import pytest
import yaml

from dic.errors import ConfigError, DefinitionError
from dic.synth.biobank import BiobankWriter, dna_sample_id
from dic.synth.catalog import load_catalog
from dic.synth.genomics import GenomicsWriter, load_panel
from dic.synth.site_patient import Identity, PersonId, SiteContext, SitePatient

SITE, SEED, YEARS = "site-a", 3, (2015, 2025)
GENOTYPED = 4200  # 5 batches of up to 1,000 samples
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
PANEL = load_panel()
EFFECT = [v for v in PANEL.variants if v.effect]


def person(i: int, rand: random.Random, genotyped: bool = True) -> SitePatient:
    """A person as the genomics writer needs them: number, genotype of the effect variants."""
    genotype = {v.id: sum(rand.random() < v.af for _ in range(2)) for v in EFFECT}
    return SitePatient(PersonId(f"P{i}"), SITE, str(1_000_000_001 + i), [{"resourceType": "Patient", "id": f"p{i}"}],
                       lambda source: Identity(*[None] * 8), genotype, genotyped)


@pytest.fixture(scope="module")
def people() -> list[SitePatient]:
    rand = random.Random(17)
    out: list[SitePatient] = []
    genotyped = 0
    while genotyped < GENOTYPED:
        out.append(person(len(out), rand, genotyped=rand.random() < 0.25))
        genotyped += out[-1].genotyped
    return out


def write(folder: Path, people: list[SitePatient], seed: int = SEED) -> tuple[dict[str, int], list[tuple]]:
    folder.mkdir(parents=True, exist_ok=True)
    links: list[tuple] = []
    writer = GenomicsWriter(folder, SiteContext(SITE, seed, YEARS, lambda *row: links.append(row)))
    for p in people:
        writer.add(p)
    return writer.close(), links


def parse(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """One VCF with pysam: sample names and per record the fields and each sample's call."""
    with pysam.VariantFile(str(path)) as vcf:
        samples = list(vcf.header.samples)
        records = [{"chrom": r.chrom, "pos": r.pos, "id": r.id, "ref": r.ref, "alts": r.alts,
                    "info": dict(r.info), "filter": list(r.filter),
                    "calls": [(s["GT"], s.get("AD"), s.get("DP"), s.get("GQ")) for s in r.samples.values()]}
                   for r in vcf.fetch()]
        contigs = list(vcf.header.contigs)
    return samples, [{"contigs": contigs, **r} for r in records]


@pytest.fixture(scope="module")
def batches(people: list[SitePatient], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("genomics")
    counts, links = write(folder, people)
    parsed = {name: parse(folder / name) for name in sorted(counts)}
    return {"folder": folder, "counts": counts, "links": links, "parsed": parsed}


def test_panel_notation_agrees_with_ref_alt_and_strand() -> None:
    """An independent check of the declaration: SNVs are the c. bases on the gene's strand; the
    deleted or duplicated bases are a rotation of the named ones (VCF left-aligns, HGVS shifts 3')."""
    assert len(PANEL.variants) >= 50 and len({v.gene for v in PANEL.variants}) >= 25
    for v in PANEL.variants:
        minus = PANEL.genes[v.gene].strand == "-"
        flip = (lambda s: "".join(COMPLEMENT[b] for b in reversed(s))) if minus else (lambda s: s)
        if m := re.search(r"([ACGT])>([ACGT])$", v.id):
            assert (v.ref, v.alt) == (flip(m[1]), flip(m[2])), v.id
        else:
            m = re.search(r"(del|dup)([ACGT]+)$", v.id)
            assert m, v.id
            short, long = (v.alt, v.ref) if m[1] == "del" else (v.ref, v.alt)
            changed = long[len(short):]
            assert long.startswith(short) and sorted(changed) == sorted(flip(m[2])) and flip(m[2]) in changed * 2, v.id
        assert 0 < v.pos <= PANEL.contigs[v.chrom]
        assert v.rsid is None or re.fullmatch(r"rs\d+", v.rsid)


def test_effect_variants_are_the_catalog_s(tmp_path: Path) -> None:
    catalog = {v.id: v.allele_frequency for v in load_catalog().variants}
    assert {v.id: v.af for v in EFFECT} == catalog
    data = yaml.safe_load(Path(__file__).parents[2].joinpath("src/dic/synth/genomics.yaml").read_text("utf-8"))
    data["variants"][0]["ref"] = "G"  # F5 Leiden is C>T on the plus strand
    data["variants"][1]["chrom"] = "chr99"
    broken = tmp_path / "genomics.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(DefinitionError) as raised:
        load_panel.__wrapped__(broken)
    assert {"/variants/0/id", "/variants/1/pos"} <= {p.path for p in raised.value.problems}


def test_batches_parse_without_warnings_and_hold_patient_order(
        batches: dict[str, Any], people: list[SitePatient], capfd: pytest.CaptureFixture[str]) -> None:
    for name in batches["counts"]:
        with pysam.VariantFile(str(batches["folder"] / name)) as vcf:
            assert len(list(vcf.fetch())) == len(PANEL.variants)  # htslib parses each line as it reads
    assert capfd.readouterr().err == ""  # htslib warns on stderr about undeclared fields
    assert list(batches["counts"]) == [f"batch-{n:04d}.vcf" for n in range(1, 6)]
    names = [s for samples, _ in batches["parsed"].values() for s in samples]
    expected = [dna_sample_id(SITE, p) for p in people if p.genotyped]
    assert names == expected
    assert [len(samples) for samples, _ in batches["parsed"].values()] == [1000] * 4 + [200]
    assert batches["links"] == [("genomics", dna_sample_id(SITE, p), p.person_id) for p in people if p.genotyped]


def test_header_and_records_as_declared(batches: dict[str, Any]) -> None:
    text = (batches["folder"] / "batch-0001.vcf").read_text()
    assert text.startswith("##fileformat=VCFv4.2\n##fileDate=20251231\n")
    assert "##reference=GRCh38" in text and "##contig=<ID=chr1,length=248956422" in text
    for _, records in batches["parsed"].values():
        contigs = records[0]["contigs"]
        assert [(contigs.index(r["chrom"]), r["pos"]) for r in records] == \
               sorted((contigs.index(r["chrom"]), r["pos"]) for r in records)
        assert [(r["chrom"], r["pos"], r["ref"], r["alts"], r["id"]) for r in records] == \
               [(v.chrom, v.pos, v.ref, (v.alt,), v.rsid) for v in PANEL.variants]
        for r, v in zip(records, PANEL.variants):
            assert r["info"]["GENE"] == v.gene and r["filter"] == ["PASS"]
            assert r["info"]["HGVSC"] == f"{PANEL.genes[v.gene].transcript}:{v.hgvsc}"
            assert r["info"].get("HGVSP") == v.hgvsp
            called = [gt for gt, *_ in r["calls"] if None not in gt]
            assert r["info"]["AN"] == 2 * len(called) and r["info"]["AC"] == (sum(map(sum, called)),)


def genotype_counts(batches: dict[str, Any]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {v.id: Counter() for v in PANEL.variants}
    for _, records in batches["parsed"].values():
        for r, v in zip(records, PANEL.variants):
            counts[v.id].update(sum(gt) for gt, *_ in r["calls"] if None not in gt)
    return counts


def test_background_genotypes_follow_hardy_weinberg_and_declared_frequency(batches: dict[str, Any]) -> None:
    """Per variant: alternate allele frequency within 4 standard errors of the declared one, and
    a 1-df chi-square against Hardy-Weinberg proportions at the observed frequency below 15
    (p ~ 1e-4, so about 50 variants pass by chance with probability > 0.99)."""
    checked, counts = 0, genotype_counts(batches)
    for v in PANEL.variants:
        if v.effect:
            continue
        c = counts[v.id]
        n = sum(c.values())
        p = (c[1] + 2 * c[2]) / (2 * n)
        assert abs(p - v.af) < 4 * (v.af * (1 - v.af) / (2 * n)) ** 0.5 + 1e-3, v.id
        expected = [n * (1 - p) ** 2, 2 * n * p * (1 - p), n * p * p]
        if min(expected) >= 5:
            chi2 = sum((c[k] - e) ** 2 / e for k, e in enumerate(expected))
            assert chi2 < 15, (v.id, c, expected)
            checked += 1
    assert checked >= 15


def test_effect_variants_are_the_persons_allele_counts(batches: dict[str, Any], people: list[SitePatient]) -> None:
    genotyped = [p for p in people if p.genotyped]
    calls = 0
    for (samples, records) in batches["parsed"].values():
        start = [dna_sample_id(SITE, p) for p in genotyped].index(samples[0])
        for r, v in zip(records, PANEL.variants):
            if not v.effect:
                continue
            for person_, (gt, *_) in zip(genotyped[start:start + len(samples)], r["calls"]):
                if None not in gt:
                    assert sum(gt) == person_.genotype[v.id]
                    calls += 1
    assert calls > 0.98 * len(EFFECT) * GENOTYPED
    f5 = genotype_counts(batches)["F5:c.1601G>A"]
    n = sum(f5.values())
    assert abs((f5[1] + 2 * f5[2]) / (2 * n) - 0.025) < 4 * (0.025 * 0.975 / (2 * n)) ** 0.5


def test_call_metrics_and_missing_share(batches: dict[str, Any]) -> None:
    missing = total = 0
    depths = []
    for _, records in batches["parsed"].values():
        for r in records:
            for gt, ad, dp, gq in r["calls"]:
                total += 1
                if None in gt:
                    missing += 1
                    continue
                assert sum(ad) == dp >= PANEL.depth.min and PANEL.genotype_quality.min <= gq <= 99
                if gt == (0, 1):
                    assert 0 < ad[1] < dp or dp < 20
                depths.append(dp)
    share = missing / total
    assert abs(share - PANEL.missing_call_pct / 100) < 4 * (share * (1 - share) / total) ** 0.5 + 1e-4
    assert abs(sum(depths) / len(depths) - PANEL.depth.mean) < 1.5


def test_same_seed_same_bytes_other_seed_other_bytes(
        batches: dict[str, Any], people: list[SitePatient], tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.vcf")))).hexdigest()

    write(tmp_path / "again", people)
    write(tmp_path / "other", people, seed=SEED + 1)
    assert digest(tmp_path / "again") == digest(batches["folder"])
    assert digest(tmp_path / "other") != digest(batches["folder"])


def test_a_person_has_one_genome_at_every_site(people: list[SitePatient], tmp_path: Path) -> None:
    """Background genotypes belong to the person: another site (other patient number, other run)
    reports the same allele counts; another seed is another population."""
    persons = [p for p in people if p.genotyped][:300]
    elsewhere = [SitePatient(p.person_id, "site-c", str(2_000_000_001 + n), p.resources, p.identity, p.genotype, True)
                 for n, p in enumerate(persons)]

    def genomes(folder: Path, site: str, group: list[SitePatient], seed: int = SEED) -> list[list[int | None]]:
        folder.mkdir()
        writer = GenomicsWriter(folder, SiteContext(site, seed, YEARS, lambda *row: None))
        for p in group:
            writer.add(p)
        (name,) = writer.close()
        _, records = parse(folder / name)
        return [[None if None in gt else sum(gt) for gt, *_ in r["calls"]] for r in records]

    here, there = genomes(tmp_path / "a", SITE, persons), genomes(tmp_path / "c", "site-c", elsewhere)
    other_seed = genomes(tmp_path / "s", SITE, persons, seed=SEED + 1)
    same = [a == b for row_a, row_b in zip(here, there) for a, b in zip(row_a, row_b) if None not in (a, b)]
    assert all(same) and len(same) > 0.98 * len(here) * len(persons)
    assert here != other_seed


def test_bad_allele_count_is_a_config_error(tmp_path: Path) -> None:
    bad = person(0, random.Random(1))
    bad.genotype["F5:c.1601G>A"] = 3
    with pytest.raises(ConfigError, match="allele counts"):
        write(tmp_path, [bad])


def test_vcf_samples_are_biobank_dna_samples_of_the_same_persons(tmp_path: Path) -> None:
    """With HIS patients: every VCF sample is a DNA sample in samples.csv of that person's donor,
    and the effect-variant calls are the person's allele counts."""
    site_patients = pytest.importorskip("dic.synth.world").site_patients
    his = list(site_patients(600, 5, SITE, YEARS))
    bank_links: list[tuple] = []
    bank = BiobankWriter(tmp_path, SiteContext(SITE, 5, YEARS, lambda *row: bank_links.append(row)))
    for p in his:
        bank.add(p)
    bank.close()
    with (tmp_path / "samples.csv").open(encoding="utf-8", newline="") as f:
        samples = {row["sample_id"]: row for row in csv.DictReader(f, delimiter=";")}
    counts, links = write(tmp_path / "genomics", his, seed=5)
    donor_person = {record: pid for _, record, pid in bank_links}
    person_of = {sample: pid for _, sample, pid in links}
    by_person = {p.person_id: p for p in his}
    names = []
    for name in counts:
        order, records = parse(tmp_path / "genomics" / name)
        names += order
        for r, v in zip(records, PANEL.variants):
            for sample, (gt, *_) in zip(order, r["calls"]):
                given = by_person[person_of[sample]].genotype.get(v.id)
                assert given is None or None in gt or sum(gt) == given
    assert names == [s for _, s, _ in links] and len(names) == sum(p.genotyped for p in his) > 50
    for sample, pid in person_of.items():
        assert samples[sample]["sample_type"] == "DNA"
        assert donor_person[samples[sample]["donor_id"]] == pid
