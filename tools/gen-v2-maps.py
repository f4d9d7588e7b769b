#!/usr/bin/env python3
"""Writes the shipped vocabulary maps (mappings/hl7v2/vocab/*.csv) from the HL7 V2-to-FHIR IG's
code system tables (mappings/codesystems/*.csv).

    tools/gen-v2-maps.py IG_DIR OUT_DIR     e.g. ../shared/v2-to-fhir-ig mappings/hl7v2

Only the tables the shipped maps use are written (TABLES below). Rows without a v2 code are
left out; a v2 code the IG gives no FHIR code becomes "-" (known, not translated); FIXES below corrects the few IG rows whose target
does not fit the element it is used for. The output is committed: regenerate, then review the
diff. Segment, datatype and message maps are written by hand (each names the IG table it
follows), because the IG tables mix computable rules with prose.
"""
import csv
import io
import os
import sys

# (IG table name, our vocabulary name, what it is for)
TABLES = [
    ("AdministrativeSex", "AdministrativeSex", "HL7 table 0001 -> Patient.gender"),
    ("MaritalStatus", "MaritalStatus", "HL7 table 0002 -> Patient.maritalStatus"),
    ("IdentifierType", "IdentifierType", "HL7 table 0203 -> Identifier.type"),
    ("InterpretationCodes", "InterpretationCodes", "HL7 table 0078 (abnormal flags) -> Observation.interpretation"),
    ("ObservationResultStatusCodesInterpretation", "ObservationResultStatus", "HL7 table 0085 -> Observation.status"),
    ("ResultStatus[Non-Queries]", "ResultStatus", "HL7 table 0123 -> DiagnosticReport.status"),
    ("PatientClass[EncounterClass]", "PatientClass-EncounterClass", "HL7 table 0004 -> Encounter.class"),
    ("PatientClass[EncounterStatus]", "PatientClass-EncounterStatus", "HL7 table 0004 -> Encounter.status"),
    ("YesNoIndicator", "YesNo", "HL7 table 0136 -> boolean"),
    ("NameType", "NameType", "HL7 table 0200 -> HumanName.use"),
    ("AddressType[Use]", "AddressType-Use", "HL7 table 0190 -> Address.use"),
    ("AddressType[Type]", "AddressType-Type", "HL7 table 0190 -> Address.type"),
    ("TelecommunicationUseCode", "TelecommunicationUseCode", "HL7 table 0201 -> ContactPoint.use"),
    ("TelecommunicationEquipmentType", "TelecommunicationEquipmentType", "HL7 table 0202 -> ContactPoint.system"),
    ("Relationship", "Relationship", "HL7 table 0063 -> RelatedPerson.relationship"),
    ("ContactRole", "ContactRole", "HL7 table 0131 -> RelatedPerson.relationship"),
    ("AdmissionType", "AdmissionType", "HL7 table 0007 -> Encounter.type"),
    ("DischargeDisposition", "DischargeDisposition", "HL7 table 0112 -> Encounter.hospitalization.dischargeDisposition"),
    ("Religion", "Religion", "HL7 table 0006 -> patient-religion"),
    ("AllergenType[AllergyIntoleranceCategory]", "AllergenType-Category", "HL7 table 0127 -> AllergyIntolerance.category"),
    ("AllergyType", "AllergyType", "HL7 table 0127 -> AllergyIntolerance.type"),
    ("AllergySeverity[AllergyIntolerance.criticality]", "AllergySeverity-Criticality", "HL7 table 0128 -> AllergyIntolerance.criticality"),
    ("AllergySeverity[AllergyIntolerance.reaction.severity]", "AllergySeverity-ReactionSeverity", "HL7 table 0128 -> AllergyIntolerance.reaction.severity"),
    ("DiagnosisType", "DiagnosisType", "HL7 table 0052 -> Encounter.diagnosis.use"),
    ("CompletionStatus", "CompletionStatus", "HL7 table 0322 -> Immunization.status"),
    ("RouteOfAdministration", "RouteOfAdministration", "HL7 table 0162 -> Immunization.route"),
    ("BodySite", "BodySite", "HL7 table 0163 -> Immunization.site"),
    ("OrderControlCode[ServiceRequest.status]", "OrderControlCode-ServiceRequestStatus", "HL7 table 0119 -> ServiceRequest.status"),
    ("OrderStatus", "OrderStatus", "HL7 table 0038 -> ServiceRequest.status"),
    ("DiagnosticServiceSectionID", "DiagnosticServiceSectionID", "HL7 table 0074 -> DiagnosticReport.category"),
    ("EventType", "EventType", "HL7 table 0003 -> MessageHeader.eventCoding"),
    ("HospitalService", "HospitalService", "HL7 table 0069 -> Encounter.serviceType"),
    ("EventReason", "EventReason", "HL7 table 0062 -> Provenance.reason"),
    ("FillerStatusCodes[Appointment]", "FillerStatusCodes-Appointment", "HL7 table 0278 -> Appointment.status"),
    ("RepeatPattern", "RepeatPattern", "HL7 table 0335 -> Timing.code (RPT-1)"),
    ("EventRelatedPeriod", "EventRelatedPeriod", "HL7 table 0528 -> Timing.repeat.when (RPT-8)"),
    ("ConfidentialityCode", "ConfidentialityCode", "HL7 table 0177 -> meta.security (ORC-28)"),
    ("ProviderRole", "ProviderRole", "HL7 table 0443 -> participant role (ROL-3, PRT-4)"),
    ("PractitionerIDNumberType", "PractitionerIDNumberType", "HL7 table 0338 -> Identifier.type (PLN-2)"),
    ("Participation", "Participation", "HL7 table 0912 -> PractitionerRole.code, CareTeam.participant.role (PRT-4)"),
    ("ExtendedPriorityCodes", "ExtendedPriorityCodes", "HL7 table 0485 -> ServiceRequest.priority (TQ1-9)"),
    ("LivingWillCode", "LivingWillCode", "HL7 table 0315 -> the living will Observation's value (PD1-7)"),
    ("VIPIndicator", "VIPIndicator", "HL7 table 0099 (site codes: the IG lists targets only) -> patient-importance (PV1-16)"),
]

# (our name, v2 code) -> replacement (code, display, system): the IG row does not fit.
FIXES = {
    # CP is a mobile phone: ContactPoint.system "phone" (the XTN map sets use "mobile").
    ("TelecommunicationEquipmentType", "CP"): ("phone", "Phone", "http://hl7.org/fhir/contact-point-system"),
    # Timing.repeat.when is bound (required) to event-timing, which has no "between meals" codes:
    # known, not translated.
    ("EventRelatedPeriod", "IC"): ("-", "", ""),
    ("EventRelatedPeriod", "ICM"): ("-", "", ""),
    ("EventRelatedPeriod", "ICD"): ("-", "", ""),
    ("EventRelatedPeriod", "ICV"): ("-", "", ""),
}


def columns(header):
    """Indexes of the v2 code/system and FHIR code/display/system columns, from the IG header
    row (its layout varies between tables)."""
    h = [c.strip().lower() for c in header]
    fcode = 6
    disp = next((i for i in range(fcode + 1, len(h)) if h[i] == "display"), None)
    fsys = max((i for i in range(fcode + 1, len(h)) if h[i] == "code system"), default=None)
    return 0, 2, fcode, disp, fsys


def convert(ig_dir, ig_name, name, what):
    path = os.path.join(ig_dir, "mappings", "codesystems", "HL7 Concept Map_ %s - Sheet1.csv" % ig_name)
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    code, sys_, fcode, disp, fsys = columns(rows[1])
    out = io.StringIO()
    out.write("# mappings/hl7v2/vocab/%s.csv: %s\n" % (name, what))
    out.write("# GENERATED by tools/gen-v2-maps.py from the IG table \"%s\"; edit the generator, or\n" % ig_name)
    out.write("# override this file from the site folder.\n")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["v2 code", "v2 system", "code", "display", "system"])
    seen = set()
    for r in rows[2:]:
        r = r + [""] * 16
        v2 = r[code].strip()
        fc = r[fcode].strip()
        if not v2:
            continue
        if not fc:
            # the IG knows the code and has no FHIR equivalent: "-", so that it is not
            # reported as unknown
            fc = "-"
        d = r[disp].strip() if disp is not None and fc != "-" else ""
        if not d and fc != "-" and disp is not None and fcode + 1 < disp:
            d = r[fcode + 1].strip()  # some tables put the display one column early
        s = r[fsys].strip() if fsys is not None and fc != "-" else ""
        fc, d, s = FIXES.get((name, v2), (fc, d, s))
        row = (v2, r[sys_].strip(), fc, d, s)
        if row in seen:
            continue
        seen.add(row)
        w.writerow(row)
    return out.getvalue()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ig_dir, out_dir = sys.argv[1], sys.argv[2]
    vocab = os.path.join(out_dir, "vocab")
    os.makedirs(vocab, exist_ok=True)
    for ig_name, name, what in TABLES:
        text = convert(ig_dir, ig_name, name, what)
        with open(os.path.join(vocab, name + ".csv"), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
