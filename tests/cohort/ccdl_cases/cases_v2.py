"""CCDL version 2 cases: term codes, value and attribute filters, time restrictions, age, gender,
consent, and the inclusion AND-of-OR / exclusion OR-of-AND polarity. Written by hand; see build_cases.py."""

from __future__ import annotations

from build_cases import (
    ICD10GM_DIMDI,
    LOINC,
    MALE,
    OPS,
    SNOMED,
    Case,
    age,
    attribute,
    between,
    comparator,
    concept,
    criterion,
    diagnosis,
    gender,
    lab,
    medication,
    procedure,
    quantity_range,
    reference,
    term,
    v2,
)

AXILLARY = (LOINC, "LA9370-3", "Axillary")
ORAL = ("https://dic.example.org/fhir/CodeSystem/temperature-method", "oral", "Oral")
BLOOD = ("119297000", "Blood specimen")
TISSUE = ("119376003", "Tissue specimen")


def cases() -> list[Case]:
    return [
        icd_descendants(), atc_class(), administration_only(), ops_descendants(), concept_value(),
        comparator_gt(), comparator_ge(), comparator_lt(), comparator_le(), comparator_eq(), comparator_ne(),
        quantity_range_case(), attribute_concept(), attributes_same_event(), specimen_reference(),
        time_after_only(), time_before_only(), time_both(), age_gt_lt(), age_range(), gender_case(),
        consent_case(), inclusion_and_of_or(), exclusion_or_of_and(), example_all_properties(),
    ]


def icd_descendants() -> Case:
    case = Case("v2-icd-descendants", """
An ICD-10-GM category selects itself and every descendant; the query uses the old DIMDI system URI,
which means the BfArM one.""", v2("Alzheimer dementia (F00)", [[diagnosis("F00", system=ICD10GM_DIMDI)]]))
    case.patient("f00-early-onset", "in", "F00.0 is a child of F00.").condition("F00.0", "2020-05-04")
    case.patient("f00-category", "in", "coded with the category F00 itself.").condition("F00", "2021-02-11")
    case.patient("f00-second-coding", "in", "the ICD-10-GM coding F00.1 is the second coding of the "
                 "Condition, after a SNOMED CT one; any coding of the element counts.").condition(
        "F00.1", "2019-11-20 09:15", also=({"system": SNOMED, "code": "26929004", "display": "Alzheimer's disease"},))
    case.patient("f01-vascular", "out", "F01.1 (vascular dementia) is in a sibling category.").condition("F01.1", "2020-05-04")
    case.patient("g30-alzheimer", "out", "G30.1 is Alzheimer's disease, outside F00 (the query names only F00).") \
        .condition("G30.1", "2020-05-04")
    case.patient("no-diagnosis", "out", "no Condition at all.")
    return case


def atc_class() -> Case:
    case = Case("v2-atc-class", """
An ATC class (B01A, antithrombotic agents) selects every substance below it, in all three MII
medication resources under the context "Medikation", including a MedicationAdministration that
names its drug through a referenced Medication.""", v2("Antithrombotics (B01A)", [[medication("B01A")]]))
    case.patient("warfarin-administered", "in", "MedicationAdministration of warfarin B01AA03.") \
        .administration("B01AA03", ("2023-02-01 08:00", "2023-02-09 08:00"))
    case.patient("apixaban-statement", "in", "MedicationStatement of apixaban B01AF02.").statement("B01AF02", ("2022-07-01", None))
    case.patient("heparin-ordered", "in", "MedicationRequest of heparin B01AB01 (dated by authoredOn).") \
        .request("B01AB01", "2023-09-12 10:30")
    case.patient("rivaroxaban-by-reference", "in", "MedicationAdministration whose medicationReference points to "
                 "a Medication coded rivaroxaban B01AF01.").administration("B01AF01", "2023-03-03 12:00", by_reference=True)
    case.patient("haloperidol-administered", "out", "haloperidol N05AD01 is not an antithrombotic.") \
        .administration("N05AD01", "2023-03-03 12:00")
    return case


def administration_only() -> Case:
    case = Case("v2-medication-administration-only", """
The context "Medikamentenverabreichung" selects MedicationAdministration only; a statement or an
order of the same drug does not count.""", v2("Donepezil administered",
                                               [[medication("N06DA02", context="administration")]]))
    case.patient("donepezil-administered", "in", "MedicationAdministration of donepezil.") \
        .administration("N06DA02", "2024-01-10 08:00")
    case.patient("donepezil-statement-only", "out", "only a MedicationStatement of donepezil.") \
        .statement("N06DA02", ("2024-01-10", None))
    case.patient("donepezil-ordered-only", "out", "only a MedicationRequest of donepezil.").request("N06DA02", "2024-01-10 08:00")
    case.patient("haloperidol-only", "out", "a MedicationAdministration of another drug.") \
        .administration("N05AD01", "2024-01-10 08:00")
    return case


def ops_descendants() -> Case:
    case = Case("v2-ops-descendants", """
An OPS code selects its descendants at every depth (5-484 → 5-484.5 → 5-484.52).""",
                v2("Sphincter-preserving rectal resection", [[procedure("5-484")]]))
    case.patient("ops-grandchild", "in", "5-484.52 is a grandchild of 5-484.").procedure("5-484.52", "2022-10-04 13:10")
    case.patient("ops-child", "in", "5-484.5 is a child of 5-484.").procedure("5-484.5", "2022-10-04 13:10")
    case.patient("ops-itself", "in", "coded 5-484 itself.").procedure("5-484", "2022-10-04")
    case.patient("ops-sibling", "out", "5-485 (without sphincter preservation) is a sibling code.").procedure("5-485", "2022-10-04")
    case.patient("ops-appendectomy", "out", "5-470.1 is elsewhere in chapter 5.").procedure("5-470.1", "2022-10-04 13:10")
    return case


def concept_value() -> Case:
    smoker = term(SNOMED, "77176002", "Smoker")
    ex_smoker = term(SNOMED, "8517006", "Ex-smoker")
    case = Case("v2-concept-value", """
A concept value filter: the observation's valueCodeableConcept must match one of the selected
concepts (OR), code and system.""", v2("Smokers and ex-smokers", [[lab("72166-2", value=concept(smoker, ex_smoker))]]))
    case.patient("smoker", "in", "smoking status 77176002 Smoker.").observation(
        "72166-2", at="2023-04-04 10:00", concept=(SNOMED, "77176002", "Smoker"))
    case.patient("ex-smoker", "in", "smoking status 8517006 Ex-smoker, the second selected concept.").observation(
        "72166-2", at="2023-04-04 10:00", concept=(SNOMED, "8517006", "Ex-smoker"))
    case.patient("never-smoker", "out", "smoking status 266919005 Never smoked tobacco.").observation(
        "72166-2", at="2023-04-04 10:00", concept=(SNOMED, "266919005", "Never smoked tobacco"))
    case.patient("smoker-local-system", "out", "the code 77176002 but in a local code system, not SNOMED CT.").observation(
        "72166-2", at="2023-04-04 10:00", concept=("https://dic.example.org/fhir/CodeSystem/local-smoking", "77176002", "Raucher"))
    case.patient("smoking-not-recorded", "out", "the observation has no value (dataAbsentReason).").observation(
        "72166-2", at="2023-04-04 10:00")
    return case


def comparator_gt() -> Case:
    case = Case("v2-comparator-gt", """
`gt` with unit conversion: glucose 2345-7 (canonical mg/dL) > 7 mmol/L, i.e. > 126.112 mg/dL with the
molar mass 180.16 g/mol; values arrive in both units.""", v2("Glucose > 7 mmol/L",
                                                            [[lab("2345-7", value=comparator("gt", 7, "mmol/L"))]]))
    case.patient("glucose-130-mgdl", "in", "130 mg/dL > 126.112 mg/dL.").observation("2345-7", 130, "mg/dL", at="2023-05-02 07:30")
    case.patient("glucose-120-mgdl", "out", "120 mg/dL = 6.66 mmol/L.").observation("2345-7", 120, "mg/dL", at="2023-05-02 07:30")
    case.patient("glucose-7-5-mmol", "in", "7.5 mmol/L.").observation("2345-7", 7.5, "mmol/L", at="2023-05-02 07:30")
    case.patient("glucose-7-mmol", "out", "exactly 7 mmol/L: gt is strict.").observation("2345-7", 7, "mmol/L", at="2023-05-02 07:30")
    case.patient("glucose-in-blood", "out", "200 mg/dL, but of glucose in blood (2339-0), not the serum/plasma "
                 "code the query names.").observation("2339-0", 200, "mg/dL", at="2023-05-02 07:30")
    return case


def comparator_ge() -> Case:
    case = Case("v2-comparator-ge", """
`ge`: hemoglobin 718-7 ≥ 12 g/dL; German labs also report hemoglobin in mmol/L (molar mass of the
monomer, 16114.5 g/mol: 7.45 mmol/L = 12.005 g/dL) and in g/L.""",
                v2("Hemoglobin >= 12 g/dL", [[lab("718-7", value=comparator("ge", 12, "g/dL"))]]))
    case.patient("hb-12", "in", "12 g/dL: the boundary is included.").observation("718-7", 12, "g/dL", at="2023-06-01 08:00")
    case.patient("hb-11-9", "out", "11.9 g/dL.").observation("718-7", 11.9, "g/dL", at="2023-06-01 08:00")
    case.patient("hb-120-gl", "in", "120 g/L = 12 g/dL.").observation("718-7", 120, "g/L", at="2023-06-01 08:00")
    case.patient("hb-7-45-mmol", "in", "7.45 mmol/L = 12.005 g/dL.").observation("718-7", 7.45, "mmol/L", at="2023-06-01 08:00")
    case.patient("hb-7-4-mmol", "out", "7.4 mmol/L = 11.92 g/dL.").observation("718-7", 7.4, "mmol/L", at="2023-06-01 08:00")
    return case


def comparator_lt() -> Case:
    case = Case("v2-comparator-lt", """
`lt`: sodium 2951-2 < 135 mmol/L; one low value among normal ones is enough (any event).""",
                v2("Hyponatremia", [[lab("2951-2", value=comparator("lt", 135, "mmol/L"))]]))
    case.patient("na-134", "in", "134 mmol/L.").observation("2951-2", 134, "mmol/L", at="2023-06-01 08:00")
    case.patient("na-135", "out", "135 mmol/L: lt is strict.").observation("2951-2", 135, "mmol/L", at="2023-06-01 08:00")
    case.patient("na-141", "out", "141 mmol/L.").observation("2951-2", 141, "mmol/L", at="2023-06-01 08:00")
    p = case.patient("na-141-then-129", "in", "141 mmol/L, later 129 mmol/L: the second event passes.")
    p.observation("2951-2", 141, "mmol/L", at="2023-06-01 08:00")
    p.observation("2951-2", 129, "mmol/L", at="2023-06-03 08:00")
    return case


def comparator_le() -> Case:
    case = Case("v2-comparator-le", """
`le`: CRP 1988-5 ≤ 5 mg/L; a value in mg/dL is converted (0.5 mg/dL = 5 mg/L).""",
                v2("CRP <= 5 mg/L", [[lab("1988-5", value=comparator("le", 5, "mg/L"))]]))
    case.patient("crp-5", "in", "5 mg/L: the boundary is included.").observation("1988-5", 5, "mg/L", at="2023-06-01 08:00")
    case.patient("crp-0-5-mgdl", "in", "0.5 mg/dL = 5 mg/L.").observation("1988-5", 0.5, "mg/dL", at="2023-06-01 08:00")
    case.patient("crp-5-1", "out", "5.1 mg/L.").observation("1988-5", 5.1, "mg/L", at="2023-06-01 08:00")
    case.patient("crp-no-value", "out", "a CRP observation without a value: the event is dropped.").observation(
        "1988-5", at="2023-06-01 08:00")
    return case


def comparator_eq() -> Case:
    case = Case("v2-comparator-eq", """
`eq`: hemoglobin 718-7 = 12 g/dL, compared after conversion to the canonical unit.""",
                v2("Hemoglobin = 12 g/dL", [[lab("718-7", value=comparator("eq", 12, "g/dL"))]]))
    case.patient("hb-eq-12", "in", "12 g/dL.").observation("718-7", 12, "g/dL", at="2023-06-01 08:00")
    case.patient("hb-eq-120-gl", "in", "120 g/L = 12 g/dL after conversion.").observation("718-7", 120, "g/L", at="2023-06-01 08:00")
    case.patient("hb-eq-12-1", "out", "12.1 g/dL.").observation("718-7", 12.1, "g/dL", at="2023-06-01 08:00")
    case.patient("hb-eq-7-45-mmol", "out", "7.45 mmol/L = 12.005 g/dL, not 12.").observation(
        "718-7", 7.45, "mmol/L", at="2023-06-01 08:00")
    return case


def comparator_ne() -> Case:
    case = Case("v2-comparator-ne", """
`ne`: potassium 2823-3 ≠ 4 mmol/L; an event without a value passes no value filter.""",
                v2("Potassium != 4 mmol/L", [[lab("2823-3", value=comparator("ne", 4, "mmol/L"))]]))
    case.patient("k-4", "out", "only 4 mmol/L.").observation("2823-3", 4, "mmol/L", at="2023-06-01 08:00")
    p = case.patient("k-4-and-5-2", "in", "4 mmol/L, and 5.2 mmol/L on another day.")
    p.observation("2823-3", 4, "mmol/L", at="2023-06-01 08:00")
    p.observation("2823-3", 5.2, "mmol/L", at="2023-06-02 08:00")
    case.patient("k-3-9", "in", "3.9 mmol/L.").observation("2823-3", 3.9, "mmol/L", at="2023-06-01 08:00")
    case.patient("k-no-value", "out", "a potassium observation without a value.").observation("2823-3", at="2023-06-01 08:00")
    return case


def quantity_range_case() -> Case:
    case = Case("v2-quantity-range", """
`quantity-range`: potassium 2823-3 from 3.5 to 5.0 mmol/L, both bounds inclusive; a value in mg/dL
is converted (molar mass 39.098 g/mol: 19.5 mg/dL = 4.99 mmol/L).""",
                v2("Normokalemia", [[lab("2823-3", value=quantity_range(3.5, 5.0, "mmol/L"))]]))
    case.patient("k-3-5", "in", "3.5 mmol/L, the lower bound.").observation("2823-3", 3.5, "mmol/L", at="2023-06-01 08:00")
    case.patient("k-5-0", "in", "5.0 mmol/L, the upper bound.").observation("2823-3", 5.0, "mmol/L", at="2023-06-01 08:00")
    case.patient("k-3-4", "out", "3.4 mmol/L.").observation("2823-3", 3.4, "mmol/L", at="2023-06-01 08:00")
    case.patient("k-5-1", "out", "5.1 mmol/L.").observation("2823-3", 5.1, "mmol/L", at="2023-06-01 08:00")
    case.patient("k-19-5-mgdl", "in", "19.5 mg/dL = 4.99 mmol/L.").observation("2823-3", 19.5, "mg/dL", at="2023-06-01 08:00")
    return case


def attribute_concept() -> Case:
    temperature = criterion(
        "patient", term(LOINC, "8310-5", "Körpertemperatur"), value=quantity_range(35, 39, "Cel"),
        attributes=[attribute("method", term(LOINC, "LA9370-3", "Axillary"))], time=between("2021-09-09", "2021-10-09"))
    case = Case("v2-attribute-concept", """
The v2 example's body-temperature criterion (LOINC 8310-5 under the context "Patient", so dispatched
as an observation by its code system): a value range in Cel, an attribute filter on the method
(axillary) and a time restriction, all on the same event. A value in [degF] is converted with its
offset (98.6 [degF] = 37 Cel).""", v2("Axillary temperature 35-39 Cel in Sept/Oct 2021", [[temperature]]))
    case.patient("axillary-37", "in", "axillary 37 Cel on 2021-09-20.").observation(
        "8310-5", 37, "Cel", at="2021-09-20 08:00", method=AXILLARY)
    case.patient("axillary-98-6-degf", "in", "axillary 98.6 [degF] = 37 Cel.").observation(
        "8310-5", 98.6, "[degF]", at="2021-09-20 08:00", method=AXILLARY)
    case.patient("oral-37", "out", "37 Cel, but measured orally.").observation(
        "8310-5", 37, "Cel", at="2021-09-20 08:00", method=ORAL)
    case.patient("axillary-40", "out", "axillary, but 40 Cel.").observation("8310-5", 40, "Cel", at="2021-09-20 08:00", method=AXILLARY)
    case.patient("axillary-37-august", "out", "axillary 37 Cel, but on 2021-08-20, before the window.").observation(
        "8310-5", 37, "Cel", at="2021-08-20 08:00", method=AXILLARY)
    p = case.patient("axillary-40-oral-37", "out", "axillary 40 Cel and oral 37 Cel the same day: no single "
                     "event has both the method and the value.")
    p.observation("8310-5", 40, "Cel", at="2021-09-20 08:00", method=AXILLARY)
    p.observation("8310-5", 37, "Cel", at="2021-09-20 09:00", method=ORAL)
    return case


def attributes_same_event() -> Case:
    active = term("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")
    confirmed = term("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed")
    delirium = diagnosis("F05", attributes=[attribute("clinicalStatus", active), attribute("verificationStatus", confirmed)])
    case = Case("v2-attribute-filters-same-event", """
Two attribute filters on one criterion are ANDed and must hold on the same Condition.""",
                v2("Active confirmed delirium", [[delirium]]))
    case.patient("active-confirmed", "in", "F05.1 active and confirmed.").condition("F05.1", "2023-03-02")
    p = case.patient("statuses-split", "out", "F05.1 active but provisional, F05.0 confirmed but resolved: "
                     "neither Condition has both.")
    p.condition("F05.1", "2023-03-02", verification="provisional")
    p.condition("F05.0", "2023-04-02", clinical="resolved")
    case.patient("resolved-confirmed", "out", "F05.1 resolved.").condition("F05.1", "2023-03-02", clinical="resolved")
    case.patient("no-statuses", "out", "F05.1 without clinical or verification status.").condition(
        "F05.1", "2023-03-02", clinical=None, verification=None)
    return case


def specimen_reference() -> Case:
    active = term("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")
    linked = reference("diagnose", diagnosis("C50", attributes=[attribute("clinicalStatus", active)]), diagnosis("C18.7"))
    blood = criterion("specimen", term(SNOMED, *BLOOD), attributes=[linked])
    case = Case("v2-specimen-diagnosis-reference", """
A "reference" attribute filter: a blood specimen whose MII biobank `Diagnose` extension references a
Condition that meets one of the referenced criteria (C50 with clinical status active, or C18.7).""",
                v2("Blood samples of breast or sigmoid colon cancer", [[blood]]))
    p = case.patient("blood-c50-active", "in", "blood specimen linked to an active C50.1 (a C50 descendant).")
    p.specimen(BLOOD, "2022-02-02 09:00", diagnosis=p.condition("C50.1", "2021-12-01"))
    p = case.patient("blood-c18-7", "in", "blood specimen linked to C18.7, the second referenced criterion.")
    p.specimen(BLOOD, "2022-02-02 09:00", diagnosis=p.condition("C18.7", "2021-12-01", clinical="remission"))
    p = case.patient("blood-unlinked", "out", "has an active C50.1 and a blood specimen, but the specimen "
                     "names no diagnosis.")
    p.condition("C50.1", "2021-12-01")
    p.specimen(BLOOD, "2022-02-02 09:00")
    p = case.patient("tissue-c50", "out", "the specimen linked to C50.1 is tissue, not blood.")
    p.specimen(TISSUE, "2022-02-02 09:00", diagnosis=p.condition("C50.1", "2021-12-01"))
    p = case.patient("blood-c50-resolved", "out", "linked to C50.1 whose clinical status is resolved.")
    p.specimen(BLOOD, "2022-02-02 09:00", diagnosis=p.condition("C50.1", "2021-12-01", clinical="resolved"))
    p = case.patient("blood-hypertension", "out", "linked to I10.90; the C50.1 of the patient is not the linked one.")
    p.condition("C50.1", "2021-12-01")
    p.specimen(BLOOD, "2022-02-02 09:00", diagnosis=p.condition("I10.90", "2015-01-01"))
    return case


def time_after_only() -> Case:
    case = Case("v2-time-after-only", """
`afterDate` only: the window is [2021-01-01T00:00Z, +∞); an event passes when its interval overlaps
it. A date covers its UTC day, a year or month its whole span, a Period its start to end (open end =
+∞); onset[x] is used before recordedDate; an undated Condition passes no time restriction.""",
                v2("Hypertension from 2021", [[diagnosis("I10", time=between(after="2021-01-01"))]]))
    case.patient("onset-on-after-date", "in", "onset 2021-01-01, the first day of the window.").condition("I10.90", "2021-01-01")
    case.patient("onset-day-before", "out", "onset 2020-12-31.").condition("I10.90", "2020-12-31")
    case.patient("onset-year-2020", "out", "onset \"2020\" ends where the window starts.").condition("I10.90", "2020")
    case.patient("onset-year-2021", "in", "onset \"2021\" overlaps.").condition("I10.90", "2021")
    case.patient("onset-berlin-0-30", "out", "onset 2021-01-01T00:30+01:00 is 2020-12-31T23:30Z, before the "
                 "window (instants are compared in UTC).").condition("I10.90", "2021-01-01 00:30")
    case.patient("onset-berlin-1-30", "in", "onset 2021-01-01T01:30+01:00 = 00:30Z.").condition("I10.90", "2021-01-01 01:30")
    case.patient("onset-period-open", "in", "onsetPeriod from 2019-03-01 without an end.").condition("I10.90", ("2019-03-01", None))
    case.patient("onset-period-ended", "out", "onsetPeriod 2019-03-01 to 2020-12-31 ends before the window.") \
        .condition("I10.90", ("2019-03-01", "2020-12-31"))
    case.patient("recorded-only", "in", "no onset; recordedDate 2021-03-01 is used.").condition(
        "I10.90", None, recorded="2021-03-01 10:00")
    case.patient("undated", "out", "neither onset nor recordedDate.").condition("I10.90")
    return case


def time_before_only() -> Case:
    case = Case("v2-time-before-only", """
`beforeDate` only: the window is (−∞, 2021-01-01T00:00Z), i.e. up to and including 2020-12-31.""",
                v2("Hypertension until 2020", [[diagnosis("I10", time=between(before="2020-12-31"))]]))
    case.patient("onset-on-before-date", "in", "onset 2020-12-31, the last day of the window.").condition("I10.90", "2020-12-31")
    case.patient("onset-day-after", "out", "onset 2021-01-01.").condition("I10.90", "2021-01-01")
    case.patient("onset-month-2020-12", "in", "onset \"2020-12\".").condition("I10.90", "2020-12")
    case.patient("onset-month-2021-01", "out", "onset \"2021-01\".").condition("I10.90", "2021-01")
    case.patient("onset-new-years-eve", "in", "onset 2020-12-31T23:30+01:00 = 22:30Z.").condition("I10.90", "2020-12-31 23:30")
    case.patient("onset-period-from-2021", "out", "onsetPeriod starting 2021-01-01.").condition("I10.90", ("2021-01-01", None))
    case.patient("onset-before-recorded-after", "in", "onset 2020-06-01, recorded 2021-02-01: onset[x] wins.").condition(
        "I10.90", "2020-06-01", recorded="2021-02-01 11:00")
    return case


def time_both() -> Case:
    case = Case("v2-time-both", """
Both bounds (the v2 example's F09 window 2021-09-09 to 2021-10-09): [2021-09-09Z, 2021-10-10Z),
Periods overlap it or not.""", v2("F09 in Sept/Oct 2021", [[diagnosis("F09", time=between("2021-09-09", "2021-10-09"))]]))
    case.patient("f09-first-day", "in", "onset 2021-09-09.").condition("F09", "2021-09-09")
    case.patient("f09-last-day", "in", "onset 2021-10-09.").condition("F09", "2021-10-09")
    case.patient("f09-day-before", "out", "onset 2021-09-08.").condition("F09", "2021-09-08")
    case.patient("f09-day-after", "out", "onset 2021-10-10.").condition("F09", "2021-10-10")
    case.patient("f09-period-spanning", "in", "onsetPeriod all of 2021: covers the window.").condition(
        "F09", ("2021-01-01", "2021-12-31"))
    case.patient("f09-period-into-window", "in", "onsetPeriod 2021-08-01 to 2021-09-09 12:00 reaches into the window.") \
        .condition("F09", ("2021-08-01", "2021-09-09 12:00"))
    case.patient("f09-period-before", "out", "onsetPeriod 2021-08-01 to 2021-09-08 ends the day before.") \
        .condition("F09", ("2021-08-01", "2021-09-08"))
    case.patient("f09-month", "in", "onset \"2021-09\" overlaps.").condition("F09", "2021-09")
    return case


def age_gt_lt() -> Case:
    case = Case("v2-age-gt-lt", """
Age (LOINC 30525-0, unit `a`) in completed years at the reference date, from the birthDate's low
bound: older than 18 AND younger than 65 (two AND clauses).""",
                v2("Adults 19 to 64", [[age(comparator("gt", 18, "a"))], [age(comparator("lt", 65, "a"))]]))
    case.patient("age-18-today", "out", "born 2006-06-15: 18 today, not > 18.", birth="2006-06-15")
    case.patient("age-19", "in", "born 2005-06-15: 19.", birth="2005-06-15")
    case.patient("age-64", "in", "born 1959-06-16: 64, 65 tomorrow.", birth="1959-06-16")
    case.patient("age-65-today", "out", "born 1959-06-15: 65 today, not < 65.", birth="1959-06-15")
    case.patient("birth-year-only", "in", "born \"2005\": low bound 2005-01-01, 19.", birth="2005")
    case.patient("no-birth-date", "out", "no birthDate: no age.", birth=None)
    return case


def age_range() -> Case:
    case = Case("v2-age-range", """
An age range, 18 to 65 inclusive, with the unit `year` (as in the v2 example).""",
                v2("Age 18-65", [[age(quantity_range(18, 65, "year"))]]))
    case.patient("range-18-today", "in", "born 2006-06-15: 18 today.", birth="2006-06-15")
    case.patient("range-17", "out", "born 2006-06-16: 17.", birth="2006-06-16")
    case.patient("range-65", "in", "born 1958-06-16: 65.", birth="1958-06-16")
    case.patient("range-66-today", "out", "born 1958-06-15: 66 today.", birth="1958-06-15")
    case.patient("range-birth-month", "in", "born \"2006-06\": low bound 2006-06-01, 18.", birth="2006-06")
    return case


def gender_case() -> Case:
    lookup = "https://fhir.loinc.org/CodeSystem/$lookup?system=http://loinc.org&code=LL2191-6"
    female = {"code": "F", "display": "female", "system": lookup, "version": ""}
    male = {"code": "M", "display": "male", "system": lookup, "version": ""}
    case = Case("v2-gender", """
Gender (LOINC LL2191-6) with the v2 example's concepts F and M (its odd $lookup system): mapped onto
Patient.gender female/male; a collection Bundle.""", v2("Female or male", [[gender(female, male)]]), bundle_type="collection")
    case.patient("gender-female", "in", "gender female.")
    case.patient("gender-male", "in", "gender male.", gender="male")
    case.patient("gender-other", "out", "gender other.", gender="other")
    case.patient("gender-unknown", "out", "gender unknown.", gender="unknown")
    case.patient("gender-missing", "out", "no gender.", gender=None)
    return case


def consent_case() -> Case:
    policy = term("urn:oid:2.16.840.1.113883.3.1937.777.24.5.3", "2.16.840.1.113883.3.1937.777.24.5.3.8",
                  "MDAT wissenschaftlich nutzen EU DSGVO NIVEAU")
    case = Case("v2-consent", """
Consent (context Einwilligung): an active Consent with a nested `permit` provision for the MII policy
code MDAT_wissenschaftlich_nutzen (…24.5.3.8) whose period overlaps the time restriction (from 2024).""",
                v2("Broad consent for research use, valid in 2024", [[criterion(
                    "consent", policy, time=between(after="2024-01-01"))]]))
    case.patient("permit-valid", "in", "permit for .8 from 2019-01-01 to 2049-01-01.").consent(
        ("permit", "6", "2019-01-01", "2049-01-01"), ("permit", "8", "2019-01-01", "2049-01-01"))
    case.patient("permit-open-end", "in", "permit for .8 from 2023-05-01 without an end.").consent(
        ("permit", "8", "2023-05-01", None))
    case.patient("permit-expired", "out", "permit for .8 from 2015-08-31 to 2020-08-30, before 2024.").consent(
        ("permit", "8", "2015-08-31", "2020-08-30"))
    case.patient("consent-inactive", "out", "the Consent's status is inactive.").consent(
        ("permit", "8", "2019-01-01", "2049-01-01"), status="inactive")
    case.patient("denied", "out", "the provision for .8 is a deny.").consent(("deny", "8", "2019-01-01", "2049-01-01"))
    case.patient("other-policy", "out", "permits only .7 (MDAT_speichern_verarbeiten).").consent(
        ("permit", "7", "2019-01-01", "2049-01-01"))
    return case


def inclusion_and_of_or() -> Case:
    case = Case("v2-inclusion-and-of-or", """
Inclusion `[[A], [B, C]]` is A AND (B OR C): hypertension and (type 2 diabetes or chronic kidney disease).""",
                v2("Hypertension with diabetes or CKD", [[diagnosis("I10")], [diagnosis("E11"), diagnosis("N18")]]))
    p = case.patient("i10-e11", "in", "A and B.")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p = case.patient("i10-n18", "in", "A and C.")
    p.condition("I10.90", "2015-01-01")
    p.condition("N18.4", "2016-01-01")
    case.patient("i10-alone", "out", "A only.").condition("I10.90", "2015-01-01")
    p = case.patient("e11-n18", "out", "B and C without A.")
    p.condition("E11.90", "2016-01-01")
    p.condition("N18.4", "2016-01-01")
    p = case.patient("i10-e11-n18", "in", "all three.")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p.condition("N18.4", "2016-01-01")
    return case


def exclusion_or_of_and() -> Case:
    case = Case("v2-exclusion-or-of-and", """
Exclusion `[[A], [B, C]]` is A OR (B AND C) in version 2: exclude men, and patients with both type 2
diabetes and CKD (male given as the v2 example does, system "").""",
                v2("Hypertension, not male, not diabetes with CKD", [[diagnosis("I10")]],
                   [[gender(MALE)], [diagnosis("E11"), diagnosis("N18")]]))
    case.patient("excl-female", "in", "female with I10, nothing to exclude.").condition("I10.90", "2015-01-01")
    case.patient("excl-male", "out", "male: the first exclusion clause.", gender="male").condition("I10.90", "2015-01-01")
    p = case.patient("excl-female-e11", "in", "E11 alone does not exclude (B AND C).")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p = case.patient("excl-female-n18", "in", "N18 alone does not exclude.")
    p.condition("I10.90", "2015-01-01")
    p.condition("N18.4", "2016-01-01")
    p = case.patient("excl-female-e11-n18", "out", "E11 and N18: the second exclusion clause.")
    p.condition("I10.90", "2015-01-01")
    p.condition("E11.90", "2016-01-01")
    p.condition("N18.4", "2016-01-01")
    return case


def example_all_properties() -> Case:
    """The v2 example ccdl-all-properties.json, re-created with the same criteria and its oddities."""
    lookup = "https://fhir.loinc.org/CodeSystem/$lookup?system=http://loinc.org&code=LL2191-6"
    sexes = [{"code": "F", "display": "female", "system": lookup, "version": ""},
             {"code": "M", "display": "male", "system": lookup, "version": ""}]
    active = {"code": "active", "system": "http://hl7.org/fhir/", "display": "active"}
    specimen = criterion("specimen", {"code": "5-016.0", "system": OPS, "version": "2023", "display": "Schädelbasis, Tumorgewebe"},
                         attributes=[reference("diagnose",
                                               diagnosis("C50.0", system="icd-o-3", attributes=[attribute("status", active)]),
                                               diagnosis("C50.1", system="icd-o-3"))])
    temperature = criterion("patient", term(LOINC, "8310-5", "Körpertemperatur"), value=quantity_range(35, 39, "Cel"),
                            attributes=[attribute("method", term(LOINC, "LA9370-3", "Axillary"))],
                            time=between("2021-09-09", "2021-10-09"))
    query = v2("Example-CCDL", [
        [gender(*sexes)],
        [age(comparator("gt", 18, "a"))],
        [diagnosis("F00", system=ICD10GM_DIMDI), diagnosis("F09", system=ICD10GM_DIMDI, time=between("2021-09-09", "2021-10-09"))],
        [specimen],
    ], [
        [gender(MALE)],
        [age(comparator("gt", 65, "year"))],
        [diagnosis("F00.9", system=ICD10GM_DIMDI), temperature],
    ])
    case = Case("v2-example-all-properties", """
The MII v2 example `ccdl-all-properties.json` re-created: female or male, older than 18, F00 any time
or F09 in Sept/Oct 2021, and a specimen coded (oddly) with OPS 5-016.0 linked to an ICD-O-3 coded
C50.0 (status active) or C50.1 — codes of an unknown system and a code outside our OPS catalogue,
matched literally (the example's status concept names the system `http://hl7.org/fhir/`, which no
clinicalStatus coding carries, so the patients here are linked to C50.1); excluding men, anyone older than 65, and F00.9 together with an axillary
temperature of 35-39 Cel in the F09 window. Each excluded patient misses or hits exactly one thing.""", query)

    def qualifying(patient_id: str, why: str, *, expect: str = "in", gender_: str = "female", birth: str = "1970-01-01",
                   dementia: str | None = "F00.1"):
        p = case.patient(patient_id, expect, why, gender=gender_, birth=birth)
        if dementia:
            p.condition(dementia, "2020-01-01")
        linked = p.condition("C50.1", "2020-02-01", system="icd-o-3")
        p.specimen(("5-016.0", "Schädelbasis, Tumorgewebe"), "2020-03-01 10:00", diagnosis=linked, type_system=OPS)
        return p

    qualifying("example-all-criteria", "female, 54, F00.1, a 5-016.0 specimen linked to C50.1 (ICD-O-3).")
    p = qualifying("example-f09-in-window", "F09 on 2021-09-20 instead of F00.", dementia=None)
    p.condition("F09", "2021-09-20")
    p = qualifying("example-f09-outside", "F09 only on 2021-11-01, outside its window, and no F00.", expect="out", dementia=None)
    p.condition("F09", "2021-11-01")
    qualifying("example-male", "male: excluded.", expect="out", gender_="male")
    qualifying("example-aged-74", "born 1950: older than 65, excluded.", expect="out", birth="1950-01-01")
    p = qualifying("example-f00-9-axillary", "F00.9 and an axillary 37 Cel on 2021-09-20: the third exclusion clause.",
                   expect="out", dementia="F00.9")
    p.observation("8310-5", 37, "Cel", at="2021-09-20 08:00", method=AXILLARY)
    p = qualifying("example-f00-9-temperature-later", "F00.9, but the axillary 37 Cel is on 2022-01-10, outside the "
                   "exclusion window: not excluded.", dementia="F00.9")
    p.observation("8310-5", 37, "Cel", at="2022-01-10 08:00", method=AXILLARY)
    p = case.patient("example-specimen-unlinked", "out", "everything else, but the specimen names no diagnosis.",
                     birth="1970-01-01")
    p.condition("F00.1", "2020-01-01")
    p.condition("C50.1", "2020-02-01", system="icd-o-3")
    p.specimen(("5-016.0", "Schädelbasis, Tumorgewebe"), "2020-03-01 10:00", type_system=OPS)
    return case
