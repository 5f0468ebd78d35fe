"""Line-by-line checks of a VCF 4.1-4.5 text file against the spec and its own header.

    check_header(lines) -> Header | (line number, reason)   the meta lines and the #CHROM line
    Header.check_record(fields, line) -> reason | None       one data line, split at tabs

htslib (pysam) accepts most files the hts-specs conformance suite says must fail (it parses leniently
and stops at the first record it cannot parse), so the reader checks every line here first and hands
pysam only the lines that pass. Rules are the VCF 4.3 spec's, with the reserved keys in `vcf.yaml`;
a header problem refuses the whole file. Measured on the suite (`tests/sources/test_vcf.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from math import comb
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

RULES_PATH = Path(__file__).with_name("vcf.yaml")
_FILEFORMAT = re.compile(r"##fileformat=VCFv(4\.[0-9])")
_META_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
_ID_KEY = re.compile(r"(?:[A-Za-z_][0-9A-Za-z_.]*|1000G)")
_STRICT_CONTIG = re.compile(r"[0-9A-Za-z!#$%&+./;?@^_|~\-]+")
_CONTIG = re.compile(r"[0-9A-Za-z!#$%&+./;?@^_|~\-][0-9A-Za-z!#$%&*+./;=?@^_|~\-]*")
_NUMBER = re.compile(r"[0-9]+|[ARG.]")
_BASES = re.compile(r"[ACGTNacgtn]+")
_ALT_BASES = re.compile(r"[ACGTNacgtn*]+")
_SYMBOLIC = re.compile(r"<[^<>,\s]+>")
_BREAKEND = re.compile(r"(?:[ACGTNacgtn]+[\[\]][^\[\]\s]+:[0-9]+[\[\]]|[\[\]][^\[\]\s]+:[0-9]+[\[\]][ACGTNacgtn]+"
                       r"|\.[ACGTNacgtn]+|[ACGTNacgtn]+\.|[ACGTNacgtn]*<[^<>]+>[ACGTNacgtn]*)")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
                    re.IGNORECASE)
_GT = re.compile(r"(?:[0-9]+|\.)(?:[/|](?:[0-9]+|\.))*|[/|]?(?:[0-9]+|\.)(?:[/|](?:[0-9]+|\.))*")
_INT32_MIN_VALID = -(2**31) + 8  # -2^31 .. -2^31+7 are reserved by BCF
_CIGAR = re.compile(r"(?:[0-9]+[MIDNSHP=X])+")
_INT32_MAX = 2**31 - 1
_DUPLICATE_WINDOW = 1000  # bases: how far back a duplicate of a record is looked for
_LOCAL_NUMBERS = {"LA", "LR", "LG", "P", "M"}  # VCF 4.4/4.5: local alleles, ploidy, base modifications
_COLUMNS = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]


@cache
def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))


def _version_at_least(version: str, than: str) -> bool:
    return tuple(int(x) for x in version.split(".")) >= tuple(int(x) for x in than.split("."))


@dataclass(frozen=True, slots=True)
class Definition:
    number: str
    type: str


@dataclass
class Header:
    """What the header declares, and the state the record checks keep (sorting, duplicates)."""

    version: str
    info: dict[str, Definition] = field(default_factory=dict)
    format: dict[str, Definition] = field(default_factory=dict)
    filters: set[str] = field(default_factory=set)
    contigs: dict[str, dict[str, str]] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # unstructured ##key=value (reference, ...)
    finished_chroms: set[str] = field(default_factory=set)
    chrom: str | None = None
    last_pos: int = 0
    seen: dict[tuple[int, str, str], int] = field(default_factory=dict)  # normalized variant -> its POS

    @property
    def lenient_end(self) -> bool:
        """VCF 4.4 on accepts a last line without a line end (the 4.3 suite rejects it)."""
        return _version_at_least(self.version, "4.4")

    # ------------------------------------------------------------------ one data line
    def check_record(self, fields: list[str]) -> str | None:
        """Why a data line (split at tabs) is not a valid record, or None."""
        width = 8 + (1 + len(self.samples) if self.samples else 0)
        if len(fields) != width and not (not self.samples and len(fields) == 9 and fields[8] in ("", ".")):
            return f"{len(fields)} columns, the header declares {width}"
        chrom, pos, ids, ref, alt, qual, filters, info = fields[:8]
        strict = _version_at_least(self.version, "4.3")
        problem = (_check_chrom(chrom) or (strict and _check_chrom_strict(chrom)) or self._check_pos(chrom, pos) or _check_ids(ids) or _check_ref(ref)
                   or _check_alt(alt, ref) or _check_qual(qual) or _check_filter(filters)
                   or self._check_info(info, alt))
        if problem:
            return problem
        if self.samples:
            problem = self._check_samples(fields[8], fields[9:], alt)
            if problem:
                return problem
        return self._check_order(chrom.strip("<>"), int(pos), ref, alt)

    def _check_pos(self, chrom: str, pos: str) -> str | None:
        if not pos.isdigit():  # 0 is allowed: a telomere
            return "POS is not a positive whole number"
        if int(pos) > _INT32_MAX:
            return "POS is beyond 2^31-1"
        length = self.contigs.get(chrom, {}).get("length")
        if length and length.isdigit() and int(pos) > int(length) + 1:
            return f"POS beyond the length of contig {chrom}"
        return None

    def _check_order(self, chrom: str, pos: int, ref: str, alt: str) -> str | None:
        if chrom != self.chrom:
            if chrom in self.finished_chroms:
                return f"chromosome {chrom} is not contiguous (its records are split by another chromosome)"
            if self.chrom is not None:
                self.finished_chroms.add(self.chrom)
            self.chrom, self.last_pos, self.seen = chrom, pos, {}
        elif pos < self.last_pos and not _version_at_least(self.version, "4.4"):
            return "records are not sorted by position"
        elif pos > self.last_pos + _DUPLICATE_WINDOW:
            self.seen = {k: p for k, p in self.seen.items() if p >= pos - _DUPLICATE_WINDOW}
        self.last_pos = max(self.last_pos, pos)
        for allele in alt.split(","):
            if allele != "." and not _is_symbolic(allele):
                key = _normalized(pos, ref.upper(), allele.upper())
                if key in self.seen:
                    return "duplicated variant (the same change as an earlier record, after trimming shared bases)"
                self.seen[key] = pos
        return None

    def _check_info(self, info: str, alt: str) -> str | None:
        if info == ".":
            return None
        if not info or any(c.isspace() for c in info):
            return "INFO is empty or contains whitespace"
        seen: set[str] = set()
        n_alt = len(alt.split(",")) if alt != "." else 0
        for item in info.split(";"):
            key, has_value, value = item.partition("=")
            if not key:
                return "INFO has an empty entry"
            if not _ID_KEY.fullmatch(key):
                return f"INFO key {key!r} is not a valid key"
            if key in seen:
                return f"INFO key {key} appears twice"
            seen.add(key)
            definition = self.info.get(key) or _reserved("INFO", key, self.version)
            if definition is None:
                continue  # undeclared keys are tolerated (htslib adds a definition)
            if definition.type == "Flag":
                if has_value and value not in ("0", "1"):  # DB=1 is seen in valid files
                    return f"INFO {key} is a Flag and takes no value (other than 0 or 1)"
                continue
            if not has_value:
                return f"INFO {key} has no value"
            if key in _NO_COMMA and "," in value:
                return f"INFO {key} contains a comma"
            # a String of Number 1 may hold commas (quoted free text); others list values
            values = [value] if definition.type == "String" and definition.number == "1" else value.split(",")
            problem = _check_values(values, definition, n_alt, 2, f"INFO {key}")
            if problem:
                return problem
            if key == "CIGAR" and any(v != "." and not _CIGAR.fullmatch(v) for v in values):
                return "INFO CIGAR is not a CIGAR string"
        return None

    def _check_samples(self, format_: str, samples: list[str], alt: str) -> str | None:
        keys = format_.split(":")
        if format_ in ("", ".") or any(not k for k in keys):
            return "FORMAT is empty or has an empty key"
        for key in keys:
            if not _ID_KEY.fullmatch(key):
                return f"FORMAT key {key!r} is not a valid key"
        if len(set(keys)) != len(keys):
            return "FORMAT has a key twice"
        if "GT" in keys and keys[0] != "GT":
            return "FORMAT: GT must be the first key"
        n_alt = len(alt.split(",")) if alt != "." else 0
        definitions = [self.format.get(k) or _reserved("FORMAT", k, self.version) for k in keys]
        lenient = _version_at_least(self.version, "4.4")  # 4.4 on: an empty value is a missing one
        for number, sample in enumerate(samples, start=1):
            values = sample.split(":")
            if len(values) > len(keys):
                return f"sample {number} has more fields than FORMAT declares"
            ploidy = 2
            if keys[0] == "GT":
                gt = values[0]
                if not _GT.fullmatch(gt):
                    return f"sample {number}: GT {gt!r} is not a genotype"
                alleles = re.split(r"[/|]", gt.lstrip("/|"))
                ploidy = len(alleles)
                if n_alt and any(a != "." and int(a) > n_alt for a in alleles):
                    return f"sample {number}: GT allele index beyond the {n_alt} ALT allele(s)"
            for key, value, definition in zip(keys, values, definitions, strict=False):
                if key == "GT" or definition is None or value == "." or value == "" and lenient:
                    continue
                problem = _check_values(value.split(","), definition, n_alt, ploidy, f"sample {number} {key}")
                if problem:
                    return problem
        return None


def _normalized(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """The variant with the bases REF and ALT share at the end, then at the start, trimmed."""
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return pos, ref, alt


def _reserved(kind: str, key: str, version: str) -> Definition | None:
    found = load_rules()["reserved"][kind].get(key)
    if found is None or not _version_at_least(version, str(found.get("since", "4.0"))):
        return None
    if "until" in found and _version_at_least(version, _next(str(found["until"]))):
        return None
    return Definition(str(found["number"]), found["type"])


def _next(version: str) -> str:
    major, minor = version.split(".")
    return f"{major}.{int(minor) + 1}"


def _expected_count(number: str, n_alt: int, ploidy: int) -> int | None:
    if number.isdigit():
        return int(number)
    if number == "A":
        return n_alt
    if number == "R":
        return n_alt + 1
    if number == "G":
        alleles = n_alt + 1
        if ploidy == 1:
            return alleles
        return comb(alleles + ploidy - 1, ploidy)
    return None


def _check_values(values: list[str], definition: Definition, n_alt: int, ploidy: int, what: str) -> str | None:
    expected = _expected_count(definition.number, n_alt, ploidy)
    counted = expected is not None and (n_alt or definition.number not in "AG") and \
        not (what.startswith("INFO ") and definition.number == "G")  # G is per sample: any count in INFO
    if counted and len(values) != expected and values != ["."]:
        return f"{what} has {len(values)} value(s), its Number {definition.number} asks for {expected}"
    for value in values:
        if value == ".":
            continue
        if definition.type == "Integer":
            if not _INTEGER.fullmatch(value):
                return f"{what}: {value!r} is not an Integer"
            if not _INT32_MIN_VALID <= int(value) <= _INT32_MAX:
                return f"{what}: {value} is outside the 32-bit range VCF allows"
        elif definition.type == "Float":
            if not _FLOAT.fullmatch(value):
                return f"{what}: {value!r} is not a Float"
        elif definition.type == "Character":
            if len(value) != 1:
                return f"{what}: {value!r} is not one Character"
        elif definition.type == "String" and any(c.isspace() and c != " " for c in value):
            return f"{what}: contains a tab or line break"
    if what.startswith("INFO ") and what[5:] in _NON_NEGATIVE and any(
            v != "." and v.lstrip("+-").replace(".", "", 1).isdigit() and float(v) < 0 for v in values):
        return f"{what} is negative"
    return None


_NON_NEGATIVE = {"AC", "AF", "AN", "DP", "END", "MQ0", "NS", "BQ", "MQ"}
_NO_COMMA = {"AA"}


def _check_chrom(chrom: str) -> str | None:
    if not chrom or any(c.isspace() for c in chrom):
        return "CHROM is empty or contains whitespace"
    if "," in chrom or chrom.startswith(("*", "=")):
        return "CHROM contains a character a contig name may not have"
    return None


def _check_chrom_strict(chrom: str) -> str | None:
    """VCF 4.3: a contig name without ':' or '*' (what the reference validator holds to)."""
    name = chrom[1:-1] if chrom.startswith("<") and chrom.endswith(">") else chrom
    if not _STRICT_CONTIG.fullmatch(name):
        return "CHROM contains a character a contig name may not have (4.3)"
    return None


def _check_ids(ids: str) -> str | None:
    if ids == ".":
        return None
    parts = ids.split(";")
    if any(not p or any(c.isspace() for c in p) for p in parts):
        return "ID has an empty entry, a stray semicolon or whitespace"
    if len(set(parts)) != len(parts):
        return "ID lists the same identifier twice"
    return None


def _check_ref(ref: str) -> str | None:
    if not _BASES.fullmatch(ref):
        return "REF is not one allele of the bases A, C, G, T, N"
    return None


def _is_symbolic(allele: str) -> bool:
    return allele.startswith(("<", ".")) or "[" in allele or "]" in allele or allele.endswith(".")


def _check_alt(alt: str, ref: str) -> str | None:
    if alt == ".":
        return None
    alleles = alt.split(",")
    for allele in alleles:
        if not allele:
            return "ALT has an empty allele (a stray comma)"
        if _ALT_BASES.fullmatch(allele):
            continue
        if _SYMBOLIC.fullmatch(allele):
            inner = allele[1:-1]
            if not inner or "<" in inner or ">" in inner:
                return "ALT symbolic allele is malformed"
            continue
        if _BREAKEND.fullmatch(allele):
            if allele in (".", "..") or allele.strip("[]") == "":
                return "ALT breakend without bases"
            continue
        return "ALT allele is neither bases, a symbolic allele nor a breakend"
    return None


def _check_qual(qual: str) -> str | None:
    if qual == ".":
        return None
    if not _FLOAT.fullmatch(qual):
        return "QUAL is not a number"
    if float(qual) < 0:
        return "QUAL is negative"
    return None


def _check_filter(filters: str) -> str | None:
    if filters in ("PASS", "."):
        return None
    parts = filters.split(";")
    if any(not p or p == "." or any(c.isspace() for c in p) for p in parts):
        return "FILTER has an empty entry, a stray semicolon, whitespace or '.' beside a value"
    if "0" in parts:
        return "FILTER uses the reserved value 0"
    if len(set(parts)) != len(parts):
        return "FILTER lists the same filter twice"
    return None


# ---------------------------------------------------------------------- the header
def check_header(lines: list[tuple[int, str]]) -> Header | tuple[int, str]:
    """The declared header, or (line number, reason) for the first problem. `lines` are the `##`
    lines and the `#CHROM` line with their numbers (line ends removed)."""
    if not lines:
        return 1, "no header: the file does not start with ##fileformat"
    number, first = lines[0]
    found = _FILEFORMAT.fullmatch(first)
    if not found:
        return number, "the first line is not ##fileformat=VCFv4.x"
    header = Header(found.group(1))
    rules = load_rules()
    for number, line in lines[1:-1]:
        if not line.startswith("##"):
            return number, "a header line that starts with a single #"
        problem = _check_meta(header, line[2:], rules)
        if problem:
            return number, problem
    number, columns = lines[-1]
    if not columns.startswith("#CHROM"):
        return number, "no #CHROM header line before the records"
    names = columns.split("\t")
    if names[:8] != _COLUMNS:
        return number, "the #CHROM line does not name the 8 fixed columns, tab-separated"
    if len(names) > 8:
        if names[8] != "FORMAT":
            return number, "the 9th column of the #CHROM line is not FORMAT"
        header.samples = names[9:]
        if any(not s or s != s.strip() for s in header.samples):
            return number, "an empty sample name or one with surrounding whitespace"
        if len(set(header.samples)) != len(header.samples):
            return number, "sample names are not unique"
    return header


def _check_meta(header: Header, text: str, rules: dict[str, Any]) -> str | None:
    key, has_value, value = text.partition("=")
    if not has_value or not key:
        return "a header line that is not ##key=value"
    if not _META_KEY.fullmatch(key):
        return f"header key {key!r} has characters a key may not have"
    if not value.startswith("<"):
        if not value.strip():
            return f"##{key} has an empty value"
        if key in rules["structured"]:
            return f"##{key} must be a structured <...> line"
        if key in ("assembly", "pedigreeDB") and not _is_url(value):
            return f"##{key} is not a valid URL"
        header.meta.setdefault(key, value)
        return None
    if not value.endswith(">"):
        return f"##{key}=< is not closed by >"
    if key == "pedigreeDB":
        return None if _is_url(value[1:-1]) else "##pedigreeDB is not a valid URL"
    pairs = _structured(value[1:-1])
    if isinstance(pairs, str):
        # an unknown key may hold any <...> text (##AnalysisTitleBrackets=<"...">)
        return f"##{key}: {pairs}" if key in rules["structured"] or not value[1:-1] else None
    required = rules["structured"].get(key)
    names = [name for name, _ in pairs]
    if required is not None:
        if any(r not in names for r in required):
            return f"##{key} lacks one of {', '.join(required)}"
        known = [n for n in names if n in rules["ordered"][key]]
        if known != [n for n in rules["ordered"][key] if n in known]:
            return f"##{key} must name {', '.join(rules['ordered'][key])} in this order"
    fields = dict(pairs)
    if key == "ALT" and ("Number" in fields or "Type" in fields) and (  # VCF 4.0/4.1 style
            not _NUMBER.fullmatch(fields.get("Number", "1")) or fields.get("Type", "String") not in rules["types"]["INFO"]):
        return "##ALT Number or Type is not valid"
    if key in ("SAMPLE", "PEDIGREE", "contig", "ALT", "FILTER", "INFO", "FORMAT", "META") and "ID" in fields:
        problem = _check_id(key, fields["ID"], header.version)
        if problem:
            return problem
    if key == "PEDIGREE" and _version_at_least(header.version, "4.3"):
        if "ID" not in fields and any(not re.fullmatch(r"Name_[0-9]+", n) for n in fields):
            return "##PEDIGREE has no ID"
        if any(not re.fullmatch(r"[0-9A-Za-z_.\-+#@]+", v) for v in fields.values()):
            return "##PEDIGREE value with whitespace or a character an id may not have"
    if key in ("INFO", "FORMAT", "META"):
        return _check_definition(header, key, fields, rules)
    if key == "contig":
        header.contigs[fields["ID"]] = fields
    elif key == "FILTER":
        header.filters.add(fields["ID"])
    elif key == "META" and not (fields.get("Values", "").startswith("[")):
        return "##META Values must be in square brackets"
    return None


def _is_url(value: str) -> bool:
    """A URL with a scheme and, except for file:, a host name or IP address (not a bare number)."""
    parsed = urlparse(value)
    if not parsed.scheme or not (parsed.netloc or parsed.scheme == "file"):
        return False
    try:
        host = parsed.hostname or ""
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parsed.scheme == "file" or bool(re.fullmatch(r"[A-Za-z0-9.\-]*[A-Za-z.][A-Za-z0-9.\-]*", host))


def _check_id(key: str, value: str, version: str) -> str | None:
    if not value:
        return f"##{key} has an empty ID"
    if any(c.isspace() for c in value) or "," in value:
        return f"##{key} ID contains whitespace or a comma"
    if key == "contig" and not (_STRICT_CONTIG if _version_at_least(version, "4.3") else _CONTIG).fullmatch(value):
        return "##contig ID has a character a contig name may not have"
    if key == "ALT":
        if "<" in value or ">" in value:
            return "##ALT ID contains an angle bracket"
        prefix = value.split(":")[0]
        # 4.3 allows own ids ("customcontig"); a typed id ("DEL:ME") must use a known type
        typed = ":" in value or not _version_at_least(version, "4.3")
        if typed and prefix not in load_rules()["alt_prefixes"] and not re.fullmatch(r"CN[0-9]+", prefix):
            return "##ALT ID does not start with a known type (DEL, INS, DUP, INV, CNV, BND)"
    if key in ("INFO", "FORMAT") and not _ID_KEY.fullmatch(value):
        return f"##{key} ID is not a valid key"
    if key in ("SAMPLE", "PEDIGREE") and not re.fullmatch(r"[0-9A-Za-z_.\-+#@]+", value):
        return f"##{key} ID has a character an id may not have"
    return None


def _check_definition(header: Header, key: str, fields: dict[str, str], rules: dict[str, Any]) -> str | None:
    number, kind = fields.get("Number", ""), fields.get("Type", "")
    if not (_NUMBER.fullmatch(number) or _version_at_least(header.version, "4.4") and number in _LOCAL_NUMBERS):
        return f"##{key} Number {number!r} is not an integer, A, R, G or ."
    if kind not in rules["types"][key]:
        return f"##{key} Type {kind!r} is not one of {', '.join(rules['types'][key])}"
    if key == "META":
        return None if fields.get("Values", "").startswith("[") else "##META Values must be in square brackets"
    if not fields.get("Description", "").startswith('"'):
        return f"##{key} Description must be in double quotes"
    reserved = _reserved(key, fields["ID"], header.version)
    if reserved is not None and (reserved.number != number or reserved.type != kind):
        return (f"##{key} {fields['ID']} is reserved with Number={reserved.number}, Type={reserved.type} "
                f"(declared Number={number}, Type={kind})")
    target = header.info if key == "INFO" else header.format
    target[fields["ID"]] = Definition(number, kind)
    return None


def _structured(body: str) -> list[tuple[str, str]] | str:
    """The key=value pairs of a <...> header value (values may be quoted, with \\" escapes)."""
    pairs, at, n = [], 0, len(body)
    while at < n:
        end = at
        while end < n and body[end] != "=":
            if body[end] in ',"<>':
                return "an entry that is not key=value"
            end += 1
        if end >= n:
            return "an entry that is not key=value"
        name = body[at:end]
        if not name or not _META_KEY.fullmatch(name):
            return f"key {name!r} has characters a key may not have"
        at = end + 1
        if at < n and body[at] == '"':
            end = at + 1
            while end < n and body[end] != '"':
                end += 2 if body[end] == "\\" else 1
            if end >= n:
                return f"the quoted value of {name} is not closed"
            value = body[at:end + 1]
            at = end + 1
            if at < n and body[at] != ",":
                return f"the quoted value of {name} has unescaped quotes"
        else:
            end = at
            depth = 0
            while end < n and (body[end] != "," or depth):
                if body[end] == "[":
                    depth += 1
                elif body[end] == "]":
                    depth -= 1
                end += 1
            value = body[at:end]
            if name in ("ID", "Number", "Type") and (not value or any(c.isspace() for c in value)):
                return f"{name} is empty or contains whitespace"
            at = end
        if name == "Description" and not value.startswith('"'):
            return "Description must be in double quotes"
        pairs.append((name, value))
        if at < n:
            at += 1  # the comma
            if at >= n:
                return "a trailing comma"
    return pairs
