"""CCDL version 3 (draft) cases: the worked examples of ccdl-v3-draft.md re-created in spirit, plus
chains of first anchors, absolute and relative restrictions together, exclusion-side anchors and the
uniform AND of a group's clauses. Written by hand; see build_cases.py.

Window arithmetic (docs/cohorts.md): an anchor witness w is its event's point interval [w.lo, w.hi)
— a dateTime lasts one second, a date its UTC day, `now` the reference day; an entry's window is
[w.lo + minOffset, w.hi + maxOffset), a missing offset leaves that side open. Local times are
Europe/Berlin (+02:00 in these summer months)."""

from __future__ import annotations

from build_cases import (
    FEMALE,
    NOW,
    Case,
    after,
    between,
    comparator,
    diagnosis,
    gender,
    group,
    lab,
    medication,
    procedure,
    v3,
)

DEMENTIA = [[diagnosis("F00", "G30")]]


def cases() -> list[Case]:
    return [
        first_dementia_anchor(), or_scoped_anchors(), hemoglobin_last_24h(), hemoglobin_after_procedure(),
        multi_clause_anchor(), any_chained_anchors(), any_three_hops(), any_multi_clause_anchor(),
        between_two_anchors(), two_separate_groups(), last_anchor_end(), absolute_and_relative(),
        exclusion_side_anchor(), exclusion_uniform_and(), first_anchor_chain(), now_months(),
    ]


def first_dementia_anchor() -> Case:
    query = v3("Female patients around a first dementia diagnosis", [[
        group("group-female", [[gender(FEMALE)]]),
        group("anchor-dementia-diagnosis", DEMENTIA, occurrence="first"),
        group("group-infection-signs-before-diagnosis", [[lab("1988-5"), lab("6690-2")], [lab("8867-4")]],
              after("anchor-dementia-diagnosis", "-P3D", "P0D")),
        group("group-donepezil-after-diagnosis", [[medication("N06DA02")]], after("anchor-dementia-diagnosis", "P0D", "P30D")),
        group("group-weight-since-diagnosis-window", [[lab("29463-7")]], after("anchor-dementia-diagnosis", "-P7D")),
        group("anchor-now", [[NOW]]),
        group("group-respiratory-rate-since-now", [[lab("9279-1")]], after("anchor-now", "-P7D", "P0D")),
    ]], [
        [group("group-excl-anticoagulant-after-diagnosis", [[medication("B01A")]],
               after("anchor-dementia-diagnosis", "P0D", "P2D"))],
        [group("group-excl-organ-failure", [[diagnosis("N18"), diagnosis("K72")]])],
    ])
    case = Case("v3-first-dementia-anchor", """
`ccdl-with-new-time-constraint-draft.json` in spirit: female patients whose FIRST dementia diagnosis
(F00 or G30) anchors (CRP OR leukocytes) AND heart rate within 3 days before it, donepezil within 30
days after, a body weight from 7 days before on (open end), and — anchored to `now` — a respiratory
rate in the last 7 days; excluded: an anticoagulant (B01A) within 2 days after the diagnosis (an
exclusion group referencing an inclusion anchor), or chronic kidney disease OR hepatic failure
(separate exclusion group arrays: OR). The diagnosis is at 2024-05-10 09:00 unless said otherwise:
signs window [05-07 09:00, 05-10 09:00], donepezil until 06-09 09:00, respiratory rate from
2024-06-08 (UTC day).""", query)

    def qualifying(patient_id: str, expect: str, why: str, *, sex: str = "female", crp: bool = True,
                   heart_rate_at: str = "2024-05-09 08:00", respiratory_at: str = "2024-06-12 10:00"):
        p = case.patient(patient_id, expect, why, gender=sex, birth="1941-02-02")
        p.condition("G30.1", "2024-05-10 09:00")
        p.observation("1988-5" if crp else "6690-2", 24 if crp else 13.5, "mg/L" if crp else "10*3/uL", at="2024-05-08 08:00")
        p.observation("8867-4", 96, "/min", at=heart_rate_at)
        p.statement("N06DA02", ("2024-05-20", None))
        p.observation("29463-7", 61.5, "kg", at="2024-05-05 10:00")
        p.observation("9279-1", 18, "/min", at=respiratory_at)
        return p

    qualifying("dementia-full-match", "in", "every group holds around the diagnosis; respiratory rate on 06-12.")
    qualifying("dementia-leukocytes", "in", "leukocytes instead of CRP: the other criterion of the OR clause.", crp=False)
    qualifying("dementia-anticoagulated", "out", "enoxaparin on 05-11, one day after the diagnosis.") \
        .administration("B01AB05", "2024-05-11 08:00")
    qualifying("dementia-anticoagulant-later", "in", "enoxaparin on 05-20, outside the 2-day exclusion window.") \
        .administration("B01AB05", "2024-05-20 08:00")
    qualifying("dementia-earlier-diagnosis", "out", "an F00.1 on 2022-01-10 is the first dementia diagnosis; nothing "
               "happened around it.").condition("F00.1", "2022-01-10 11:00")
    qualifying("dementia-male", "out", "male.", sex="male")
    qualifying("dementia-kidney-failure", "out", "N18.4: the organ-failure exclusion.").condition("N18.4", "2023-01-01")
    qualifying("dementia-old-respiratory-rate", "out", "the respiratory rate is from 06-01, not within the last 7 days.",
               respiratory_at="2024-06-01 10:00")
    qualifying("dementia-heart-rate-early", "out", "heart rate on 05-06, 4 days before the diagnosis.",
               heart_rate_at="2024-05-06 08:00")
    return case


def or_scoped_anchors() -> Case:
    query = v3("Three alternative pathways", [
        [group("group-gender", [[gender(FEMALE)]]),
         group("group-crp-standalone", [[lab("1988-5", value=comparator("gt", 10, "mg/L"))]])],
        [group("anchor-dementia-diagnosis", DEMENTIA, occurrence="first"),
         group("group-donepezil-after-diagnosis", [[medication("N06DA02")]], after("anchor-dementia-diagnosis", "P0D", "P30D"))],
        [group("group-weight-since-diagnosis-window", [[lab("29463-7")]], after("anchor-dementia-diagnosis", "-P7D"))],
    ])
    case = Case("v3-or-scoped-anchors", """
`ccdl-example-or-scoped-anchors-draft.json` in spirit: three group arrays, OR'd — (1) female AND CRP >
10 mg/L, no anchor; (2) a first dementia diagnosis AND donepezil within 30 days after it; (3) a body
weight from 7 days before that diagnosis on, referencing array 2's anchor without listing it (the
anchor only dates the window there).""", query)
    case.patient("or-female-crp", "in", "array 1: female, CRP 25 mg/L.").observation("1988-5", 25, "mg/L", at="2024-04-02 08:00")
    case.patient("or-female-low-crp", "out", "female, CRP 3 mg/L only.").observation("1988-5", 3, "mg/L", at="2024-04-02 08:00")
    case.patient("or-male-crp", "out", "male with CRP 25 mg/L: array 1 needs female.", gender="male") \
        .observation("1988-5", 25, "mg/L", at="2024-04-02 08:00")
    p = case.patient("or-dementia-donepezil", "in", "array 2: F00.1 on 04-02, donepezil on 04-15.", gender="male")
    p.condition("F00.1", "2024-04-02 10:00")
    p.administration("N06DA02", "2024-04-15 08:00")
    p = case.patient("or-dementia-weight", "in", "array 3: G30.1 on 04-02 and a weight on 04-30 — the anchor dates "
                     "the window although array 3 does not list it.", gender="male")
    p.condition("G30.1", "2024-04-02 10:00")
    p.observation("29463-7", 80, "kg", at="2024-04-30 08:00")
    case.patient("or-weight-no-dementia", "out", "a weight but no dementia diagnosis: no anchor, no window.",
                 gender="male").observation("29463-7", 80, "kg", at="2024-04-30 08:00")
    p = case.patient("or-weight-before-window", "out", "F00.1 on 04-02, weight on 03-01 (32 days before).", gender="male")
    p.condition("F00.1", "2024-04-02 10:00")
    p.observation("29463-7", 80, "kg", at="2024-03-01 08:00")
    return case


def hemoglobin_last_24h() -> Case:
    query = v3("Hemoglobin in the last 24 hours", [[
        group("anchor-now", [[NOW]]),
        group("group-hemoglobin", [[lab("718-7")]], after("anchor-now", "-PT24H", "P0D")),
    ]])
    case = Case("v3-hemoglobin-last-24h", """
`ccdl-example-hemoglobin-last-24h.json` in spirit: `now` is the reference day [2024-06-15T00:00Z,
2024-06-16T00:00Z), so the window is [2024-06-14T00:00Z, 2024-06-16T00:00Z).""", query)
    case.patient("hb24-yesterday-noon", "in", "2024-06-14 12:00.").observation("718-7", 13.1, "g/dL", at="2024-06-14 12:00")
    case.patient("hb24-today", "in", "2024-06-15 08:00.").observation("718-7", 13.1, "g/dL", at="2024-06-15 08:00")
    case.patient("hb24-two-days-ago", "out", "2024-06-13 12:00.").observation("718-7", 13.1, "g/dL", at="2024-06-13 12:00")
    case.patient("hb24-date-yesterday", "in", "dated 2024-06-14 (day precision).").observation("718-7", 13.1, "g/dL", at="2024-06-14")
    case.patient("hb24-date-before", "out", "dated 2024-06-13: that day ends where the window starts.") \
        .observation("718-7", 13.1, "g/dL", at="2024-06-13")
    case.patient("hb24-crp-only", "out", "a CRP today, no hemoglobin.").observation("1988-5", 4, "mg/L", at="2024-06-15 08:00")
    case.patient("hb24-tomorrow", "out", "2024-06-16 09:00 (07:00Z), after the reference day.") \
        .observation("718-7", 13.1, "g/dL", at="2024-06-16 09:00")
    return case


def hemoglobin_after_procedure() -> Case:
    query = v3("Hemoglobin within 24 hours after the first appendectomy", [[
        group("anchor-procedure", [[procedure("5-470")]], occurrence="first"),
        group("group-hemoglobin", [[lab("718-7")]], after("anchor-procedure", "P0D", "PT24H")),
    ]])
    case = Case("v3-hemoglobin-24h-after-procedure", """
`ccdl-example-hemoglobin-24h-after-procedure.json` in spirit: the first appendectomy (5-470 and its
children) anchors a hemoglobin in [procedure, procedure + 24 h]; without the anchor nobody
qualifies. A day-precision procedure stretches the window over its whole day.""", query)
    p = case.patient("appendectomy-hb-10h", "in", "5-470.1 on 2024-05-06 10:00, hemoglobin at 20:00.")
    p.procedure("5-470.1", "2024-05-06 10:00")
    p.observation("718-7", 11.2, "g/dL", at="2024-05-06 20:00")
    p = case.patient("appendectomy-hb-25h", "out", "hemoglobin 25 hours later (05-07 11:00).")
    p.procedure("5-470.1", "2024-05-06 10:00")
    p.observation("718-7", 11.2, "g/dL", at="2024-05-07 11:00")
    case.patient("appendectomy-missing", "out", "a hemoglobin but no appendectomy: the anchor is missing.") \
        .observation("718-7", 11.2, "g/dL", at="2024-05-06 20:00")
    p = case.patient("appendectomy-hb-before", "out", "hemoglobin 2 hours before the procedure.")
    p.procedure("5-470.1", "2024-05-06 10:00")
    p.observation("718-7", 11.2, "g/dL", at="2024-05-06 08:00")
    p = case.patient("appendectomy-second", "out", "5-470.0 on 2024-01-15 is the first; the hemoglobin follows the "
                     "second one (5-470.1 on 05-06).")
    p.procedure("5-470.0", "2024-01-15 10:00")
    p.procedure("5-470.1", "2024-05-06 10:00")
    p.observation("718-7", 11.2, "g/dL", at="2024-05-06 13:00")
    p = case.patient("appendectomy-day-precision", "in", "procedure dated 2024-05-06 (UTC day): window [05-06T00Z, "
                     "05-08T00Z); hemoglobin on 05-07 20:00 (18:00Z).")
    p.procedure("5-470.1", "2024-05-06")
    p.observation("718-7", 11.2, "g/dL", at="2024-05-07 20:00")
    return case


def multi_clause_anchor() -> Case:
    query = v3("Colon resection with transfusion", [
        [group("anchor-procedure", [[procedure("5-455")], [procedure("8-800")]], occurrence="first"),
         group("group-hemoglobin-and-diagnosis", [[lab("718-7")], [diagnosis("K57.3")]], after("anchor-procedure", "P0D", "P2D")),
         group("group-gender", [[gender(FEMALE)]])],
        [group("group-crp-after-procedure", [[lab("1988-5")]], after("anchor-procedure", "P0D", "P2D"))],
    ])
    case = Case("v3-multi-clause-anchor", """
`ccdl-example-multi-clause-anchor.json` in spirit: a two-clause anchor (colon resection 5-455 AND
transfusion 8-800, first of each) gives the window [latest clause, earliest clause + 2 days]; clauses
more than 2 days apart make it empty. Array 1: the anchor, hemoglobin AND K57.3 in the window, and
female; array 2 references the same anchor for a CRP without listing it.""", query)

    def operated(patient_id: str, expect: str, why: str, *, sex: str = "female", transfusion: str | None = "2024-05-06 12:00"):
        p = case.patient(patient_id, expect, why, gender=sex)
        p.procedure("5-455", "2024-05-06 08:00")
        if transfusion:
            p.procedure("8-800", transfusion)
        return p

    p = operated("resection-close-clauses", "in", "resection 05-06 08:00, transfusion 12:00: window [05-06 12:00, "
                 "05-08 08:00]; hemoglobin 05-07 10:00 and K57.3 dated 05-07.")
    p.observation("718-7", 9.8, "g/dL", at="2024-05-07 10:00")
    p.condition("K57.3", "2024-05-07")
    p = operated("resection-far-clauses", "out", "transfusion on 05-16, 10 days after the resection: the window "
                 "[05-16 08:00, 05-08 08:00] is empty.", transfusion="2024-05-16 08:00")
    p.observation("718-7", 9.8, "g/dL", at="2024-05-16 12:00")
    p.condition("K57.3", "2024-05-16")
    p.observation("1988-5", 40, "mg/L", at="2024-05-16 12:00")
    p = operated("resection-no-transfusion", "out", "no transfusion: a clause without candidates, no witness.",
                 transfusion=None)
    p.observation("718-7", 9.8, "g/dL", at="2024-05-07 10:00")
    p.condition("K57.3", "2024-05-07")
    p.observation("1988-5", 40, "mg/L", at="2024-05-07 10:00")
    operated("resection-male-crp", "in", "male (array 1 fails) with a CRP on 05-07 10:00: array 2.", sex="male") \
        .observation("1988-5", 40, "mg/L", at="2024-05-07 10:00")
    p = operated("resection-male-no-crp", "out", "male with hemoglobin and K57.3 in the window but no CRP.", sex="male")
    p.observation("718-7", 9.8, "g/dL", at="2024-05-07 10:00")
    p.condition("K57.3", "2024-05-07")
    operated("resection-crp-between-clauses", "out", "male, CRP at 05-06 10:00: after the resection but before the "
             "transfusion, where the window starts.", sex="male").observation("1988-5", 40, "mg/L", at="2024-05-06 10:00")
    return case


def any_chained_anchors() -> Case:
    query = v3("Delirium after dementia, treated and worked up", [[
        group("anchor-dementia-diagnosis", DEMENTIA, occurrence="first"),
        group("group-delirium-after-diagnosis", [[diagnosis("F05")]], after("anchor-dementia-diagnosis", "P0D", "P30D"),
              occurrence="any"),
        group("group-haloperidol-after-delirium", [[medication("N05AD01")]], after("group-delirium-after-diagnosis", "P0D", "P3D")),
        group("group-sodium-around-delirium", [[lab("2951-2")]], after("group-delirium-after-diagnosis", "-P1D", "P1D")),
    ]])
    case = Case("v3-any-chained-anchors", """
`ccdl-example-any-chained-anchors-draft.json` in spirit: a first dementia diagnosis (05-02 10:00)
anchors delirium episodes within 30 days (`any`); haloperidol within 3 days after and a sodium
within a day either side must follow the SAME episode (one shared witness per anchor per group
array). Delirium candidates are only those inside their own window (chaining).""", query)

    def demented(patient_id: str, expect: str, why: str):
        p = case.patient(patient_id, expect, why)
        p.condition("F00.1", "2024-05-02 10:00")
        return p

    p = demented("delirium-same-episode", "in", "delirium 05-10 10:00, haloperidol 05-11 09:00, sodium 05-10 12:00.")
    p.condition("F05.1", "2024-05-10 10:00")
    p.administration("N05AD01", "2024-05-11 09:00")
    p.observation("2951-2", 131, "mmol/L", at="2024-05-10 12:00")
    p = demented("split", "out", "episode A (05-06) got haloperidol (05-07), episode B (05-20) a sodium (05-20): each "
                 "dependent is met by a different episode.")
    p.condition("F05.1", "2024-05-06 10:00")
    p.administration("N05AD01", "2024-05-07 09:00")
    p.condition("F05.1", "2024-05-20 10:00")
    p.observation("2951-2", 131, "mmol/L", at="2024-05-20 12:00")
    p = demented("delirium-middle-episode", "in", "episodes on 05-06, 05-15 and 05-25; only the middle one has "
                 "haloperidol (05-16) and sodium (05-14 20:00) — neither first nor last would find it.")
    p.condition("F05.1", "2024-05-06 10:00")
    p.condition("F05.1", "2024-05-15 10:00")
    p.condition("F05.1", "2024-05-25 10:00")
    p.administration("N05AD01", "2024-05-16 09:00")
    p.observation("2951-2", 131, "mmol/L", at="2024-05-14 20:00")
    p = demented("delirium-before-dementia", "out", "the only delirium (04-25, with haloperidol and sodium) precedes "
                 "the dementia diagnosis: outside its own window, it anchors nothing.")
    p.condition("F05.1", "2024-04-25 10:00")
    p.administration("N05AD01", "2024-04-26 09:00")
    p.observation("2951-2", 131, "mmol/L", at="2024-04-25 12:00")
    p = case.patient("delirium-no-dementia", "out", "delirium, haloperidol and sodium, but no dementia diagnosis.")
    p.condition("F05.0", "2024-05-10 10:00")
    p.administration("N05AD01", "2024-05-11 09:00")
    p.observation("2951-2", 131, "mmol/L", at="2024-05-10 12:00")
    return case


def any_three_hops() -> Case:
    query = v3("Sepsis, kidney injury, dialysis, hemoglobin", [[
        group("anchor-sepsis-episode", [[diagnosis("A41.5")]], occurrence="any"),
        group("group-aki-after-sepsis", [[diagnosis("N17.0")]], after("anchor-sepsis-episode", "P0D", "P7D"), occurrence="any"),
        group("group-dialysis-after-aki", [[procedure("8-854")]], after("group-aki-after-sepsis", "P0D", "P14D"), occurrence="any"),
        group("group-hemoglobin-after-dialysis", [[lab("718-7")]], after("group-dialysis-after-aki", "P0D", "P1D")),
    ]], )
    case = Case("v3-any-three-hops", """
`ccdl-example-any-chain-three-hops-draft.json` in spirit: sepsis A41.5 (`any`) → acute kidney injury
N17.0 within 7 days (`any`) → hemodialysis 8-854 within 14 days (`any`) → hemoglobin within a day;
each hop refers to the occurrence chosen at the hop above.""", query, reference_date="2024-01-15")

    def chain(p, start: str, aki: str, dialysis: str, hemoglobin: str) -> None:
        p.condition("A41.5", start)
        p.condition("N17.0", aki)
        p.procedure("8-854", dialysis)
        p.observation("718-7", 8.9, "g/dL", at=hemoglobin)

    p = case.patient("late-episode", "in", "sepsis on 2023-05-02 is followed by kidney injury only on 05-25 (23 days): "
                     "that chain breaks at the first hop although dialysis and hemoglobin follow; the second sepsis "
                     "(07-03) → kidney injury 07-06 → dialysis 07-12 → hemoglobin 07-12 18:00 qualifies.")
    chain(p, "2023-05-02 10:00", "2023-05-25 10:00", "2023-05-28 10:00", "2023-05-28 18:00")
    chain(p, "2023-07-03 10:00", "2023-07-06 10:00", "2023-07-12 10:00", "2023-07-12 18:00")
    chain(case.patient("early-episode-only", "out", "only the broken first chain of late-episode."),
          "2023-05-02 10:00", "2023-05-25 10:00", "2023-05-28 10:00", "2023-05-28 18:00")
    chain(case.patient("direct-chain", "in", "sepsis 05-02, kidney injury 05-04, dialysis 05-10, hemoglobin 05-10 20:00."),
          "2023-05-02 10:00", "2023-05-04 10:00", "2023-05-10 10:00", "2023-05-10 20:00")
    chain(case.patient("dialysis-too-late", "out", "dialysis 16 days after the kidney injury."),
          "2023-05-02 10:00", "2023-05-04 10:00", "2023-05-20 10:00", "2023-05-20 20:00")
    chain(case.patient("hemoglobin-too-late", "out", "hemoglobin 2 days after the dialysis."),
          "2023-05-02 10:00", "2023-05-04 10:00", "2023-05-10 10:00", "2023-05-12 10:00")
    return case


def any_multi_clause_anchor() -> Case:
    query = v3("Sepsis with kidney injury, then hemoglobin and CRP", [[
        group("anchor-sepsis-with-aki", [[diagnosis("A41.5")], [diagnosis("N17.0")]], occurrence="any"),
        group("group-hemoglobin", [[lab("718-7")]], after("anchor-sepsis-with-aki", "P0D", "P3D")),
        group("group-crp", [[lab("1988-5")]], after("anchor-sepsis-with-aki", "P0D", "P1D")),
    ]])
    case = Case("v3-any-multi-clause-anchor", """
`ccdl-example-any-multi-clause-anchor-draft.json` in spirit: the witness is a (sepsis, kidney injury)
pair; windows run from the later of the two (minOffset) to the earlier + offset (maxOffset):
hemoglobin within 3 days, CRP within 1 day, both bound to the same pair.""", query, reference_date="2024-01-15")
    p = case.patient("pair-close", "in", "sepsis 2023-06-01 08:00, kidney injury 20:00: hemoglobin window "
                     "[06-01 20:00, 06-04 08:00], CRP [06-01 20:00, 06-02 08:00]; hemoglobin 06-03 10:00, CRP 06-02 06:00.")
    p.condition("A41.5", "2023-06-01 08:00")
    p.condition("N17.0", "2023-06-01 20:00")
    p.observation("718-7", 9.1, "g/dL", at="2023-06-03 10:00")
    p.observation("1988-5", 120, "mg/L", at="2023-06-02 06:00")
    p = case.patient("pair-far-apart", "out", "kidney injury 5 days after the sepsis: both windows are empty.")
    p.condition("A41.5", "2023-06-01 08:00")
    p.condition("N17.0", "2023-06-06 08:00")
    p.observation("718-7", 9.1, "g/dL", at="2023-06-06 12:00")
    p.observation("1988-5", 120, "mg/L", at="2023-06-06 12:00")
    p = case.patient("pair-split", "out", "hemoglobin follows the June pair, CRP the August pair; mixed pairs give "
                     "empty windows, so no single pair serves both.")
    p.condition("A41.5", "2023-06-01 08:00")
    p.condition("N17.0", "2023-06-01 20:00")
    p.observation("718-7", 9.1, "g/dL", at="2023-06-03 10:00")
    p.condition("A41.5", "2023-08-01 08:00")
    p.condition("N17.0", "2023-08-01 20:00")
    p.observation("1988-5", 120, "mg/L", at="2023-08-02 06:00")
    p = case.patient("pair-crp-before-aki", "out", "CRP at 06-01 12:00, after the sepsis but before the kidney injury.")
    p.condition("A41.5", "2023-06-01 08:00")
    p.condition("N17.0", "2023-06-01 20:00")
    p.observation("718-7", 9.1, "g/dL", at="2023-06-03 10:00")
    p.observation("1988-5", 120, "mg/L", at="2023-06-01 12:00")
    p = case.patient("pair-aki-only", "out", "kidney injury, hemoglobin and CRP, but no sepsis.")
    p.condition("N17.0", "2023-06-01 20:00")
    p.observation("718-7", 9.1, "g/dL", at="2023-06-03 10:00")
    p.observation("1988-5", 120, "mg/L", at="2023-06-02 06:00")
    return case


def _diverticulitis_patients(case: Case, prefix: str, expect: dict[str, str]) -> None:
    """The same five histories for the between-two-anchors case and its two-separate-groups contrast."""
    p = case.patient(f"{prefix}between", expect["between"], "diagnosis 2024-04-03, hemoglobin 04-10, resection 04-20.")
    p.condition("K57.3", "2024-04-03")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-10 09:00")
    p.procedure("5-455", "2024-04-20 08:00")
    p = case.patient(f"{prefix}two-values-outside", expect["two-values-outside"],
                     "hemoglobin on 04-01 (before the diagnosis) and 04-25 (after the resection), none between.")
    p.condition("K57.3", "2024-04-03")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-01 09:00")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-25 09:00")
    p.procedure("5-455", "2024-04-20 08:00")
    p = case.patient(f"{prefix}resection-first", expect["resection-first"],
                     "resection 03-20, diagnosis 04-03, hemoglobin 03-10 and 04-10.")
    p.procedure("5-455", "2024-03-20 08:00")
    p.condition("K57.3", "2024-04-03")
    p.observation("718-7", 10.4, "g/dL", at="2024-03-10 09:00")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-10 09:00")
    p = case.patient(f"{prefix}no-resection", expect["no-resection"], "diagnosis and hemoglobin, no resection: an anchor is missing.")
    p.condition("K57.3", "2024-04-03")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-10 09:00")
    p = case.patient(f"{prefix}hb-on-diagnosis-day", expect["hb-on-diagnosis-day"],
                     "diagnosis dated 2024-04-03 (its UTC day), hemoglobin 04-03 06:00 (04:00Z), resection 04-20.")
    p.condition("K57.3", "2024-04-03")
    p.observation("718-7", 10.4, "g/dL", at="2024-04-03 06:00")
    p.procedure("5-455", "2024-04-20 08:00")


ANCHORS = [group("anchor-colon-diverticular-disease", [[diagnosis("K57.3")]], occurrence="first"),
           group("anchor-colon-resection", [[procedure("5-455")]], occurrence="first")]


def between_two_anchors() -> Case:
    query = v3("Hemoglobin between diagnosis and resection", [[
        *ANCHORS,
        group("group-hemoglobin-between", [[lab("718-7")]], after("anchor-colon-diverticular-disease", "P0D"),
              after("anchor-colon-resection", max_offset="P0D")),
    ]])
    case = Case("v3-between-two-anchors", """
`ccdl-example-hemoglobin-between-two-anchors.json` in spirit: one group with two entries, one bounding
each side — [diagnosis K57.3, resection 5-455] — so ONE hemoglobin must lie between them; a
resection before the diagnosis inverts the window. Contrast with v3-two-separate-groups (same
histories).""", query)
    _diverticulitis_patients(case, "", {"between": "in", "two-values-outside": "out", "resection-first": "out",
                                        "no-resection": "out", "hb-on-diagnosis-day": "in"})
    return case


def two_separate_groups() -> Case:
    query = v3("Hemoglobin after diagnosis, and hemoglobin before resection", [[
        *ANCHORS,
        group("group-hemoglobin-after-diagnosis", [[lab("718-7")]], after("anchor-colon-diverticular-disease", "P0D")),
        group("group-hemoglobin-before-resection", [[lab("718-7")]], after("anchor-colon-resection", max_offset="P0D")),
    ]])
    case = Case("v3-two-separate-groups", """
The contrast to v3-between-two-anchors: the same two bounds as two groups, each with one entry — two
independent existence checks that two different hemoglobin values may satisfy.""", query)
    _diverticulitis_patients(case, "sep-", {"between": "in", "two-values-outside": "in", "resection-first": "in",
                                            "no-resection": "out", "hb-on-diagnosis-day": "in"})
    return case


def last_anchor_end() -> Case:
    query = v3("Hemoglobin within 12 hours after the end of the last dialysis", [[
        group("anchor-last-dialysis", [[procedure("8-854")]], occurrence="last", point="end"),
        group("group-hemoglobin-after-dialysis", [[lab("718-7")]], after("anchor-last-dialysis", "P0D", "PT12H")),
    ]])
    case = Case("v3-last-anchor-end", """
`last` with `anchorPoint: end` (from the all-features example): dialysis sessions are Periods; the
anchor is the end of the session that ends last, and an open session cannot serve as an end anchor.""", query)
    first, second = ("2024-05-06 08:00", "2024-05-06 12:00"), ("2024-05-10 08:00", "2024-05-10 12:00")
    p = case.patient("dialysis-after-last", "in", "sessions 05-06 and 05-10 (08:00-12:00); hemoglobin 05-10 16:00.")
    p.procedure("8-854", first)
    p.procedure("8-854", second)
    p.observation("718-7", 10.0, "g/dL", at="2024-05-10 16:00")
    p = case.patient("dialysis-after-first", "out", "hemoglobin only after the first session (05-06 16:00).")
    p.procedure("8-854", first)
    p.procedure("8-854", second)
    p.observation("718-7", 10.0, "g/dL", at="2024-05-06 16:00")
    p = case.patient("dialysis-during-last", "out", "last session 05-10 08:00-20:00, hemoglobin at 10:00: after its "
                     "start, before its end.")
    p.procedure("8-854", first)
    p.procedure("8-854", ("2024-05-10 08:00", "2024-05-10 20:00"))
    p.observation("718-7", 10.0, "g/dL", at="2024-05-10 10:00")
    p = case.patient("dialysis-open-last", "in", "the 05-10 session has no end, so it is no end anchor; the last "
                     "session that ended is 05-06, and a hemoglobin follows it (05-06 16:00).")
    p.procedure("8-854", first)
    p.procedure("8-854", ("2024-05-10 08:00", None))
    p.observation("718-7", 10.0, "g/dL", at="2024-05-06 16:00")
    p = case.patient("dialysis-long-early-session", "out", "a session 05-06 08:00 to 05-12 08:00 ends after the 05-10 "
                     "one, so it is the last by end; the hemoglobin (05-10 16:00) follows only the shorter session.")
    p.procedure("8-854", ("2024-05-06 08:00", "2024-05-12 08:00"))
    p.procedure("8-854", second)
    p.observation("718-7", 10.0, "g/dL", at="2024-05-10 16:00")
    return case


def absolute_and_relative() -> Case:
    query = v3("Donepezil from 2024 within 90 days of a dementia diagnosis made after mid-2023", [[
        group("anchor-dementia-diagnosis", [[diagnosis("F00", time=between(after="2023-06-01"))]], occurrence="first"),
        group("group-donepezil", [[medication("N06DA02", time=between(after="2024-01-01"))]],
              after("anchor-dementia-diagnosis", "P0D", "P90D")),
    ]])
    case = Case("v3-absolute-and-relative", """
An absolute `timeRestriction` and a relative window intersect on the same event (§5); an anchor's own
absolute restriction limits its candidates (the first dementia diagnosis after 2023-06-01).
2023-12-01 + 90 days = 2024-02-29.""", query)
    p = case.patient("abs-both-hold", "in", "F00.1 on 2023-12-01, donepezil 2024-01-10.")
    p.condition("F00.1", "2023-12-01")
    p.administration("N06DA02", "2024-01-10 09:00")
    p = case.patient("abs-relative-only", "out", "donepezil 2023-12-15: in the relative window, before 2024.")
    p.condition("F00.1", "2023-12-01")
    p.administration("N06DA02", "2023-12-15 09:00")
    p = case.patient("abs-each-on-another-event", "out", "donepezil 2023-12-15 (relative only) and 2024-04-01 "
                     "(absolute only): no single administration meets both.")
    p.condition("F00.1", "2023-12-01")
    p.administration("N06DA02", "2023-12-15 09:00")
    p.administration("N06DA02", "2024-04-01 09:00")
    p = case.patient("abs-old-diagnosis-ignored", "in", "F00.1 on 2022-01-10 fails the anchor's own restriction, so the "
                     "first candidate is 2023-12-01; donepezil 2024-01-10.")
    p.condition("F00.1", "2022-01-10")
    p.condition("F00.1", "2023-12-01")
    p.administration("N06DA02", "2024-01-10 09:00")
    p = case.patient("abs-only-old-diagnosis", "out", "the only diagnosis (2022-01-10) is no candidate.")
    p.condition("F00.1", "2022-01-10")
    p.administration("N06DA02", "2024-01-10 09:00")
    return case


def exclusion_side_anchor() -> Case:
    query = v3("Sepsis, unless the first transfusion followed a hemoglobin < 7 g/dL", [
        [group("group-sepsis", [[diagnosis("A41.5")]])],
    ], [
        [group("anchor-transfusion", [[procedure("8-800")]], occurrence="first"),
         group("group-low-hemoglobin-before-transfusion", [[lab("718-7", value=comparator("lt", 7, "g/dL"))]],
               after("anchor-transfusion", "-P1D", "P0D"))],
    ])
    case = Case("v3-exclusion-side-anchor", """
An anchor defined on the exclusion side: excluded are patients whose first transfusion (8-800) was
preceded within a day by a hemoglobin below 7 g/dL (4.0 mmol/L = 6.45 g/dL). Without a transfusion
the exclusion group array cannot hold.""", query)

    def septic(patient_id: str, expect: str, why: str):
        p = case.patient(patient_id, expect, why)
        p.condition("A41.5", "2024-05-05 22:00")
        return p

    septic("excl-no-transfusion", "in", "hemoglobin 6.5 g/dL but no transfusion: no anchor, nothing excludes.") \
        .observation("718-7", 6.5, "g/dL", at="2024-05-06 06:00")
    p = septic("excl-low-before-transfusion", "out", "hemoglobin 6.5 g/dL at 06:00, transfusion 12:00 the same day.")
    p.observation("718-7", 6.5, "g/dL", at="2024-05-06 06:00")
    p.procedure("8-800", "2024-05-06 12:00")
    p = septic("excl-normal-before-transfusion", "in", "hemoglobin 8.2 g/dL before the transfusion.")
    p.observation("718-7", 8.2, "g/dL", at="2024-05-06 06:00")
    p.procedure("8-800", "2024-05-06 12:00")
    p = septic("excl-low-days-before", "in", "hemoglobin 6.5 g/dL five days before the transfusion.")
    p.observation("718-7", 6.5, "g/dL", at="2024-05-01 06:00")
    p.procedure("8-800", "2024-05-06 12:00")
    p = septic("excl-low-in-mmol", "out", "hemoglobin 4.0 mmol/L (6.45 g/dL) before the transfusion.")
    p.observation("718-7", 4.0, "mmol/L", at="2024-05-06 06:00")
    p.procedure("8-800", "2024-05-06 12:00")
    case.patient("excl-no-sepsis", "out", "no sepsis: not included in the first place.") \
        .observation("718-7", 8.2, "g/dL", at="2024-05-06 06:00")
    return case


def exclusion_uniform_and() -> Case:
    query = v3("Hypertension, unless diabetes with CKD, or liver failure or COPD", [
        [group("group-hypertension", [[diagnosis("I10")]])],
    ], [
        [group("group-excl-diabetes-and-ckd", [[diagnosis("E11")], [diagnosis("N18")]])],
        [group("group-excl-liver-or-lung", [[diagnosis("K72"), diagnosis("J44.0")]])],
    ])
    case = Case("v3-exclusion-uniform-and", """
In version 3 a group's clauses are AND and a clause's criteria OR on both sides (contrast
v2-exclusion-or-of-and, where `[[E11], [N18]]` on the exclusion side meant E11 OR N18); exclusion
group arrays are OR'd.""", query)
    p = case.patient("uni-e11", "in", "I10 and E11 only: the exclusion group needs E11 AND N18.")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p = case.patient("uni-n18", "in", "I10 and N18 only.")
    p.condition("I10.90", "2015-01-01")
    p.condition("N18.4", "2016-01-01")
    p = case.patient("uni-e11-n18", "out", "E11 and N18.")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p.condition("N18.4", "2016-01-01")
    p = case.patient("uni-j44", "out", "J44.0, one criterion of the second exclusion group's OR clause.")
    p.condition("I10.90", "2015-01-01")
    p.condition("J44.0", "2016-01-01")
    case.patient("uni-i10", "in", "I10 alone.").condition("I10.90", "2015-01-01")
    return case


def first_anchor_chain() -> Case:
    query = v3("Haloperidol after the first delirium after dementia", [[
        group("anchor-dementia-diagnosis", DEMENTIA, occurrence="first"),
        group("group-delirium-after-diagnosis", [[diagnosis("F05")]], after("anchor-dementia-diagnosis", "P0D", "P30D"),
              occurrence="first"),
        group("group-haloperidol-after-delirium", [[medication("N05AD01")]], after("group-delirium-after-diagnosis", "P0D", "P3D")),
    ]])
    case = Case("v3-first-anchor-chain", """
A chain of `first` anchors: the first delirium WITHIN 30 days after the first dementia diagnosis
(candidates are filtered by the group's own window) anchors haloperidol within 3 days; a missing
head leaves the whole chain unresolved.""", query)
    p = case.patient("chain-complete", "in", "dementia 05-02, delirium 05-10, haloperidol 05-11.")
    p.condition("G30.1", "2024-05-02 10:00")
    p.condition("F05.1", "2024-05-10 10:00")
    p.administration("N05AD01", "2024-05-11 09:00")
    p = case.patient("chain-no-dementia", "out", "delirium and haloperidol without a dementia diagnosis.")
    p.condition("F05.0", "2024-05-10 10:00")
    p.administration("N05AD01", "2024-05-11 09:00")
    p = case.patient("chain-earlier-delirium-outside", "in", "a delirium on 04-20 (with haloperidol) precedes the "
                     "diagnosis and is no candidate; the first delirium in the window (05-10) has haloperidol on 05-11.")
    p.condition("G30.1", "2024-05-02 10:00")
    p.condition("F05.0", "2024-04-20 10:00")
    p.administration("N05AD01", "2024-04-21 09:00")
    p.condition("F05.1", "2024-05-10 10:00")
    p.administration("N05AD01", "2024-05-11 09:00")
    p = case.patient("chain-haloperidol-after-second", "out", "the first delirium in the window is 05-06; haloperidol "
                     "follows only the second (05-20).")
    p.condition("G30.1", "2024-05-02 10:00")
    p.condition("F05.1", "2024-05-06 10:00")
    p.condition("F05.1", "2024-05-20 10:00")
    p.administration("N05AD01", "2024-05-21 09:00")
    return case


def now_months() -> Case:
    query = v3("CRP in the last month", [[
        group("anchor-now", [[NOW]]),
        group("group-crp-last-month", [[lab("1988-5")]], after("anchor-now", "-P1M", "P0D")),
    ]])
    case = Case("v3-now-calendar-month", """
A calendar-month offset from `now`: the reference day 2024-06-15 minus one month gives the window
[2024-05-15T00:00Z, 2024-06-16T00:00Z).""", query)
    case.patient("crp-month-start-day", "in", "dated 2024-05-15, the first day of the window.") \
        .observation("1988-5", 12, "mg/L", at="2024-05-15")
    case.patient("crp-day-before-window", "out", "dated 2024-05-14.").observation("1988-5", 12, "mg/L", at="2024-05-14")
    case.patient("crp-month-precision", "in", "dated \"2024-05\": the month overlaps the window.") \
        .observation("1988-5", 12, "mg/L", at="2024-05")
    case.patient("crp-morning", "in", "2024-05-15 09:00.").observation("1988-5", 12, "mg/L", at="2024-05-15 09:00")
    case.patient("crp-last-year", "out", "2023-06-10.").observation("1988-5", 12, "mg/L", at="2023-06-10")
    return case
