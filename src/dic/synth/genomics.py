"""The genomics lab: VCF 4.2 files for the genotyped patients, one file per batch of samples.

    GenomicsWriter(folder, context)   the SourceWriter "genomics": batch-0001.vcf, batch-0002.vcf, ...
    load_panel()                      the variant panel (`genomics.yaml`), validated

A batch holds up to `batch_samples` genotyped patients in patient order; the sample names are
their biobank DNA sample ids (`biobank.dna_sample_id`). A VCF is variant by variant, so the
writer keeps one batch's genotypes and writes the file when the batch is full (memory is
bounded by one batch). Genotypes of the panel's effect variants are the person's allele counts
(drawn by the HIS generator); all others are drawn from Hardy-Weinberg with the declared
frequency, from a generator seeded by the person, so that a person genotyped at two sites has
one genome. Read depth, allelic depths and genotype quality are drawn per call, and a declared
share of calls is missing (./.). AC, AN and AF describe the batch, as a joint caller writes them.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from dic.errors import ConfigError, Problem
from dic.synth.biobank import dna_sample_id
from dic.synth.declarations import load_declarations
from dic.synth.site_patient import SiteContext, SitePatient

PANEL_PATH = Path(__file__).with_name("genomics.yaml")
_SNV = re.compile(r"c\.[-*]?\d+(?:[+-]\d+)?([ACGT])>([ACGT])$")
_INDEL = re.compile(r"c\.[-*]?\d+(?:[+-]\d+)?(?:_[-*]?\d+(?:[+-]\d+)?)?(del|dup)([ACGT]+)$")
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_GT = ("0/0", "0/1", "1/1")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gene(_Entry):
    transcript: str
    strand: Literal["+", "-"]


class Variant(_Entry):
    id: str  # "GENE:c.notation"
    hgvsp: str | None = None
    chrom: str
    pos: int
    ref: str
    alt: str
    af: float
    rsid: str | None = None
    effect: bool = False

    @property
    def gene(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def hgvsc(self) -> str:
        return self.id.split(":", 1)[1]


class Depth(_Entry):
    mean: float
    shape: float
    min: int


class Quality(_Entry):
    per_read: float
    sd: float
    min: int


class Panel(_Entry):
    source: str
    reference: str
    batch_samples: int
    missing_call_pct: float
    depth: Depth
    allele_error: float
    genotype_quality: Quality
    contigs: dict[str, int]
    genes: dict[str, Gene]
    variants: list[Variant]

    def problems(self) -> list[Problem]:
        """Cross-references and the agreement of REF/ALT with the c. notation on the gene's strand."""
        found: list[Problem] = []
        seen: set[object] = set()
        for n, v in enumerate(self.variants):
            where = f"/variants/{n}"
            gene = self.genes.get(v.gene)
            if gene is None:
                found.append(Problem(f"{where}/id", f"gene {v.gene!r} is not in /genes"))
            elif (why := notation_problem(v, gene.strand)) is not None:
                found.append(Problem(f"{where}/id", why))
            if not 0 < v.pos <= self.contigs.get(v.chrom, 0):
                found.append(Problem(f"{where}/pos", f"{v.chrom}:{v.pos} is not on a declared contig"))
            if not 0 < v.af < 1:
                found.append(Problem(f"{where}/af", "must lie strictly between 0 and 1"))
            if not re.fullmatch("[ACGT]+", v.ref + v.alt):
                found.append(Problem(f"{where}/ref", "REF and ALT are A, C, G, T only"))
            for key in (v.id, (v.chrom, v.pos, v.ref, v.alt)):
                if key in seen:
                    found.append(Problem(where, f"duplicate {key!r}"))
                seen.add(key)
        return found


def notation_problem(v: Variant, strand: str) -> str | None:
    """Why REF/ALT disagree with the c. notation, or None. Indels: VCF left-aligns and HGVS
    shifts 3', so the changed bases may be a rotation of the named ones."""
    def coding(bases: str) -> str:
        return bases if strand == "+" else bases.translate(_COMPLEMENT)[::-1]

    if m := _SNV.match(v.hgvsc):
        if len(v.ref) == len(v.alt) == 1 and (v.ref, v.alt) == (coding(m[1]), coding(m[2])):
            return None
        return f"REF/ALT {v.ref}>{v.alt} is not {m[1]}>{m[2]} on the {strand} strand"
    if m := _INDEL.match(v.hgvsc):
        short, long = (v.alt, v.ref) if m[1] == "del" else (v.ref, v.alt)
        changed, named = long[len(short):], coding(m[2])
        if long.startswith(short) and len(short) == 1 and len(changed) == len(named) and named in changed * 2:
            return None
        return f"REF/ALT {v.ref}>{v.alt} is not a {m[1]} of {m[2]} on the {strand} strand"
    return f"{v.hgvsc!r} is not a substitution, deletion or duplication in c. notation"


@cache
def load_panel(path: Path = PANEL_PATH) -> Panel:
    """The genotyping panel, validated (DefinitionError lists every problem); variants sorted."""
    panel = load_declarations(path, Panel)
    order = {c: n for n, c in enumerate(panel.contigs)}
    return panel.model_copy(update={"variants": sorted(panel.variants, key=lambda v: (order[v.chrom], v.pos))})


class GenomicsWriter:
    """The genomics lab's VCF batches of one site (see the module docstring and `genomics.yaml`)."""

    name = "genomics"

    def __init__(self, folder: Path, context: SiteContext) -> None:
        self.panel = load_panel()
        self.folder, self.context = folder, context
        key = hashlib.sha256(f"{context.seed}:{context.site}:{self.name}".encode()).digest()
        self.rng = np.random.default_rng(int.from_bytes(key[:8], "big"))
        self.ids = [v.id for v in self.panel.variants]
        # per variant: id, P(two ALT alleles), P(at least one) under Hardy-Weinberg
        self.hardy_weinberg = [(v.id, v.af * v.af, v.af * (2 - v.af)) for v in self.panel.variants]
        self.names: list[str] = []
        self.genotypes: list[list[int]] = []  # per sample: ALT allele count per variant
        self.counts: dict[str, int] = {}
        self.header = self._header()

    def add(self, patient: SitePatient) -> None:
        if not patient.genotyped:
            return
        sample = dna_sample_id(self.context.site, patient)
        given = patient.genotype
        # the germline genome belongs to the person: the same at every site that genotypes them
        genome = random.Random(f"{self.context.seed}:genome:{patient.person_id}")
        row = [given[i] if i in given else 2 if (u := genome.random()) < hom else 1 if u < het else 0
               for i, hom, het in self.hardy_weinberg]
        if any(c not in (0, 1, 2) for c in row):
            raise ConfigError(f"{self.context.site}: Patient/{patient.resources[0].get('id')}: allele counts "
                              "must be 0, 1 or 2")
        self.names.append(sample)
        self.genotypes.append(row)
        self.context.link(self.name, sample, patient.person_id)
        if len(self.names) == self.panel.batch_samples:
            self._write_batch()

    def close(self) -> dict[str, int]:
        if self.names:
            self._write_batch()
        return self.counts

    def _header(self) -> list[str]:
        p = self.panel
        used = dict.fromkeys(v.chrom for v in p.variants)
        return [
            "##fileformat=VCFv4.2",
            f"##fileDate={self.context.years[1]}1231",
            f"##source={p.source}",
            f"##reference={p.reference}",
            *(f"##contig=<ID={c},length={p.contigs[c]},assembly={p.reference}>" for c in used),
            '##FILTER=<ID=PASS,Description="All filters passed">',
            '##INFO=<ID=AC,Number=A,Type=Integer,Description="Alternate allele count in called genotypes">',
            '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">',
            '##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele frequency in called genotypes">',
            '##INFO=<ID=GENE,Number=1,Type=String,Description="HGNC gene symbol">',
            ('##INFO=<ID=HGVSC,Number=1,Type=String,Description="HGVS coding DNA change on the MANE Select '
            'transcript">'),
            '##INFO=<ID=HGVSP,Number=1,Type=String,Description="HGVS protein change (predicted)">',
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths for the REF and ALT alleles">',
            '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
            '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality (phred)">',
        ]

    def _write_batch(self) -> None:
        """Draw the call metrics of a full batch (this lab's run), then write its VCF."""
        p, rng = self.panel, self.rng
        m, n = len(self.ids), len(self.names)
        genotype = np.array(self.genotypes, dtype=np.int64).T
        missing = rng.random((m, n)) * 100 < p.missing_call_pct
        d = p.depth
        depth = np.maximum(rng.poisson(rng.gamma(d.shape, d.mean / d.shape, (m, n))), d.min)
        share = np.choose(genotype, [p.allele_error, 0.5, 1 - p.allele_error])
        alt_reads = rng.binomial(depth, share)
        q = p.genotype_quality
        quality = np.clip(np.rint(depth * q.per_read + rng.normal(0, q.sd, (m, n))), q.min, 99).astype(np.int64)
        called = ~missing
        ac = np.where(called, genotype, 0).sum(axis=1)
        an = 2 * called.sum(axis=1)
        lines = [*self.header, "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                                          *self.names])]
        for k, v in enumerate(p.variants):
            info = f"AC={ac[k]};AN={an[k]};AF={ac[k] / an[k] if an[k] else 0:.4g};GENE={v.gene};" \
                   f"HGVSC={p.genes[v.gene].transcript}:{v.hgvsc}" + (f";HGVSP={v.hgvsp}" if v.hgvsp else "")
            cells = [
                "./." if miss else f"{_GT[g]}:{dp - alt},{alt}:{dp}:{gq}"
                for miss, g, dp, alt, gq in zip(missing[k].tolist(), genotype[k].tolist(), depth[k].tolist(),
                                                alt_reads[k].tolist(), quality[k].tolist())]
            lines.append("\t".join([v.chrom, str(v.pos), v.rsid or ".", v.ref, v.alt, ".", "PASS", info,
                                    "GT:AD:DP:GQ", *cells]))
        name = f"batch-{len(self.counts) + 1:04d}.vcf"
        (self.folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.counts[name] = m
        self.names, self.genotypes = [], []
