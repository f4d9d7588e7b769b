#!/usr/bin/env python3
"""Generates fhir/r4_meta.c (the FHIR R4 type and search-parameter tables) from the official
definitions: fhir.schema.json, fhir-single.xsd and search-parameters.xml.

usage: tools/gen-r4-meta.py [DEFINITIONS-DIR [OUTPUT]]
       (defaults: ../shared/fhir-r4 relative to the source tree, and fhir/r4_meta.c)

Python 3 standard library only; the output depends on nothing but the inputs (no dates, no
hash ordering), so regenerating from the same definitions gives the same bytes.

Where each fact comes from:
- types, their elements and R4 element order, array cardinality, element types: the JSON
  schema (`properties` in order, `"type": "array"`, `$ref`; inline `enum` means `code`);
- choice types: the JSON schema lists them expanded (deceasedBoolean, deceasedDateTime), so
  the base and each expansion's type come from the XSD's <xs:choice> groups (the element
  name is base + the type name with an upper-case first letter);
- required elements: the JSON schema's `required` plus XSD minOccurs >= 1 (the JSON schema
  leaves out required primitives, whose value may sit in the `_name` companion alone); a
  choice of minOccurs >= 1 (MedicationRequest.medication[x]) flags each of its expansions;
- XML attributes (Element.id, Extension.url): the XSD's <xs:attribute>;
- primitives: JSON form from the schema's `type` (boolean, number, else string) and `pattern`.
The element order of every type is checked against the XSD's (flattened) sequence; any
disagreement between the two sources stops the generator.
"""

import json
import os
import re
import sys
import textwrap
import xml.etree.ElementTree as ET

XS = "{http://www.w3.org/2001/XMLSchema}"
FHIR = "{http://hl7.org/fhir}"


def fail(msg):
    sys.exit("gen-r4-meta: " + msg)


def c_str(s):
    if s is None:
        return "NULL"
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append("\\%03o" % o)
        elif o > 0x7E:
            out.extend("\\%03o" % b for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    # Keep "??" from forming trigraphs in any compiler mode.
    return '"' + "".join(out).replace("??", '?""?') + '"'


# --- XSD: flattened element sequences, choice groups and attributes of every complex type.


class XsdType:
    def __init__(self, name):
        self.name = name
        self.base = None
        self.items = []  # ("elem", name, type, min, max) | ("choice", min, max, [(name, type)])
        self.attrs = {}  # name -> required


def xsd_parse_group(node, t):
    for child in node:
        tag = child.tag
        if tag == XS + "element":
            name = child.get("name") or child.get("ref").split(":")[-1]
            typ = child.get("type") or child.get("ref")
            t.items.append(
                ("elem", name, typ, int(child.get("minOccurs", "1")), child.get("maxOccurs", "1"))
            )
        elif tag == XS + "choice":
            members = []
            for m in child.findall(XS + "element"):
                members.append((m.get("name") or m.get("ref"), m.get("type") or m.get("ref")))
            t.items.append(
                ("choice", int(child.get("minOccurs", "1")), child.get("maxOccurs", "1"), members)
            )
        elif tag == XS + "sequence":
            xsd_parse_group(child, t)
        elif tag == XS + "attribute":
            t.attrs[child.get("name")] = child.get("use") == "required"


def xsd_load(path):
    types = {}
    root = ET.parse(path).getroot()
    for ct in root.findall(XS + "complexType"):
        t = XsdType(ct.get("name"))
        body = ct
        ext = ct.find(XS + "complexContent/" + XS + "extension")
        if ext is None:
            ext = ct.find(XS + "simpleContent/" + XS + "extension")
        if ext is not None:
            t.base = ext.get("base")
            body = ext
        xsd_parse_group(body, t)
        types[t.name] = t
    return types


def xsd_flatten(types, name):
    """Items and attributes of a type with those of its bases first."""
    t = types[name]
    if t.base is not None and t.base in types:
        items, attrs = xsd_flatten(types, t.base)
    else:
        items, attrs = [], {}
    return items + t.items, {**attrs, **t.attrs}


def xsd_derives_from(types, name, base):
    while name is not None:
        if name == base:
            return True
        name = types[name].base if name in types else None
    return False


# --- JSON schema: the types and their elements.


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def build_types(schema, xsd, added, removed):
    defs = schema["definitions"]
    resources = sorted(schema["discriminator"]["mapping"])
    primitives = sorted(n for n, d in defs.items() if "properties" not in d and n != "ResourceList")
    types = {}

    for name in primitives:
        d = defs[name]
        form = {"boolean": "FHIR_JSON_BOOL", "number": "FHIR_JSON_NUMBER"}.get(
            d.get("type"), "FHIR_JSON_STRING"
        )
        types[name] = {
            "name": name,
            "kind": "FHIR_TYPE_PRIMITIVE",
            "form": form,
            "pattern": d.get("pattern"),
            "elems": [],
        }

    for name, d in defs.items():
        if "properties" not in d:
            continue
        xname = name.replace("_", ".")
        if xname not in xsd:
            fail("%s: no XSD complexType %s" % (name, xname))
        items, attrs = xsd_flatten(xsd, xname)
        choice_of = {}  # expanded name -> (base, xsd type)
        choice_required = set()  # expanded names of a choice of minOccurs >= 1
        xsd_elems = {}  # name -> (type, min, max)
        xsd_order = []
        for it in items:
            if it[0] == "elem":
                xsd_elems[it[1]] = (it[2], it[3], it[4])
                xsd_order.append(it[1])
            else:
                for mname, mtype in it[3]:
                    if it[1] >= 1:
                        choice_required.add(mname)
                    suffix = mtype[0].upper() + mtype[1:]
                    if not mname.endswith(suffix) or mname == suffix:
                        fail("%s.%s: choice member type %s is not its suffix" % (name, mname, mtype))
                    choice_of[mname] = (mname[: -len(suffix)], mtype)
                    xsd_order.append(mname)
        if len({b for b, _ in choice_of.values()}) != len(
            [it for it in items if it[0] == "choice"]
        ):
            fail("%s: choice groups do not have one base each" % name)

        required = set(d.get("required", []))
        elems = []
        props = d["properties"]
        for pname, p in props.items():
            if pname.startswith("_") or "const" in p:
                continue
            if pname == "modifierExtension" and pname not in xsd_elems:
                # The JSON schema gives the nested elements of data types (Timing.repeat,
                # DataRequirement.codeFilter) a modifierExtension; R4 types them Element,
                # without one, as the XSD does. XML output has to validate: follow the XSD.
                removed.append("%s.%s" % (name, pname))
                continue
            if len(pname) > 100:
                fail("%s.%s: name longer than fhir/xml.c's key buffer" % (name, pname))
            flags = []
            is_array = p.get("type") == "array"
            target = p["items"] if is_array else p
            if is_array:
                flags.append("FHIR_ELEM_ARRAY")
            base = None
            if pname in choice_of:
                base, etype = choice_of[pname]
                flags.append("FHIR_ELEM_CHOICE")
                if pname in choice_required:
                    flags.append("FHIR_ELEM_CHOICE_REQUIRED")
                if "$ref" in target and ref_name(target["$ref"]) != etype:
                    fail("%s.%s: JSON type %s, XSD %s" % (name, pname, target["$ref"], etype))
            elif "$ref" in target:
                etype = ref_name(target["$ref"])
            elif "enum" in target:
                etype = "code"
            else:
                fail("%s.%s: no type (and not an XSD choice)" % (name, pname))
            if etype not in defs:
                fail("%s.%s: unknown type %s" % (name, pname, etype))
            if pname in attrs:
                flags.append("FHIR_ELEM_ATTRIBUTE")
                req = attrs[pname]
            elif pname in xsd_elems:
                xtype, xmin, xmax = xsd_elems[pname]
                req = xmin >= 1
                if (xmax == "unbounded") != is_array:
                    fail("%s.%s: JSON and XSD cardinality differ" % (name, pname))
            elif pname in choice_of:
                req = False  # one of the group is required at most; no single expansion is
            else:
                fail("%s.%s: not in the XSD" % (name, pname))
            if pname in required or req:
                flags.append("FHIR_ELEM_REQUIRED")
            if etype in primitives and etype != "xhtml":
                # By type, not by a `_name` in the schema: it leaves out those of canonical
                # elements (Meta._profile), which FHIR JSON allows.
                flags.append("FHIR_ELEM_PRIMITIVE")
            elems.append({"name": pname, "type": etype, "base": base, "flags": flags})

        # The R4 JSON schema leaves a few open-type choice expansions out (Extension.valueMeta,
        # ElementDefinition.defaultValueMeta, ...) that the XSD and the spec have: add them
        # after their group's previous member.
        for i, xname_ in enumerate(xsd_order):
            if xname_ in choice_of and xname_ not in props:
                base, etype = choice_of[xname_]
                prev = xsd_order[i - 1]
                at = next(k for k, e in enumerate(elems) if e["name"] == prev) + 1
                flags = ["FHIR_ELEM_CHOICE"]
                if xname_ in choice_required:
                    flags.append("FHIR_ELEM_CHOICE_REQUIRED")
                if etype in primitives:
                    flags.append("FHIR_ELEM_PRIMITIVE")
                elems.insert(at, {"name": xname_, "type": etype, "base": base, "flags": flags})
                added.append("%s.%s" % (name, xname_))
        json_order = [e["name"] for e in elems if "FHIR_ELEM_ATTRIBUTE" not in e["flags"]]
        if json_order != xsd_order:
            fail("%s: element order differs from the XSD:\n  %s\n  %s" % (name, json_order, xsd_order))

        if name in resources:
            kind = "FHIR_TYPE_RESOURCE"
        elif "_" in name:
            kind = "FHIR_TYPE_BACKBONE"
        else:
            kind = "FHIR_TYPE_COMPLEX"
        types[name] = {
            "name": name,
            "kind": kind,
            "form": "FHIR_JSON_STRING",
            "pattern": None,
            "elems": elems,
            "domain": xsd_derives_from(xsd, xname, "DomainResource"),
        }
    return types, resources


# --- Search parameters.

SP_TYPES = {
    "number": "FHIR_SP_NUMBER",
    "date": "FHIR_SP_DATE",
    "string": "FHIR_SP_STRING",
    "token": "FHIR_SP_TOKEN",
    "reference": "FHIR_SP_REFERENCE",
    "composite": "FHIR_SP_COMPOSITE",
    "quantity": "FHIR_SP_QUANTITY",
    "uri": "FHIR_SP_URI",
    "special": "FHIR_SP_SPECIAL",
}


def split_union(expr):
    """Splits a FHIRPath expression at the top-level `|` (outside parentheses and quotes)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 1
    parts.append(expr[start:].strip())
    return [p for p in parts if p]


def part_subject(part):
    """The type a union part starts from: `Patient` in `(Patient.deceased as dateTime)`."""
    m = re.match(r"\(*\s*([A-Za-z][A-Za-z0-9]*)", part)
    return m.group(1) if m else None


# search-parameters.xml as shipped in ../shared is of FHIR 4.2.0 (a ballot after R4), not 4.0.1:
# it renames MedicationStatement to MedicationUsage and changes some parameters of R4 resources.
# The renamed type's parameters are taken back under the R4 name, and the parameters whose
# element paths do not exist in R4 are put back as R4 4.0.1 defines them (hl7.org/fhir/R4,
# each resource's search table), or dropped where R4 has no such parameter. Whatever else
# names a non-R4 element is listed in the output (unresolved_parts).
R4_RENAMED_TYPES = {"MedicationUsage": "MedicationStatement"}

# (resource, code): None drops it; (type, expression, targets) defines it as in R4.
R4_SEARCH_FIXES = {
    ("AdverseEvent", "code"): None,
    ("AdverseEvent", "status"): None,
    ("AdverseEvent", "date"): ("date", "AdverseEvent.date", ""),
    ("AdverseEvent", "event"): ("token", "AdverseEvent.event", ""),
    ("AdverseEvent", "severity"): ("token", "AdverseEvent.severity", ""),
    ("AdverseEvent", "substance"): (
        "reference",
        "AdverseEvent.suspectEntity.instance",
        "Device Immunization Medication MedicationAdministration MedicationStatement Procedure "
        "Substance",
    ),
    ("Appointment", "reason-code"): ("token", "Appointment.reasonCode", ""),
    ("Appointment", "reason-reference"): (
        "reference",
        "Appointment.reasonReference",
        "Condition ImmunizationRecommendation Observation Procedure",
    ),
    ("CareTeam", "date"): ("date", "CareTeam.period", ""),
    ("CatalogEntry", "name"): None,
    ("CatalogEntry", "related-entry"): None,
    ("ClinicalImpression", "finding-code"): (
        "token",
        "ClinicalImpression.finding.itemCodeableConcept",
        "",
    ),
    ("ClinicalImpression", "finding-ref"): (
        "reference",
        "ClinicalImpression.finding.itemReference",
        "Condition Media Observation",
    ),
    ("ClinicalImpression", "performer"): None,
    ("ClinicalImpression", "assessor"): (
        "reference",
        "ClinicalImpression.assessor",
        "Practitioner PractitionerRole",
    ),
    ("CommunicationRequest", "information-provider"): None,
    ("DocumentReference", "based-on"): None,
    ("Encounter", "reason-code"): ("token", "Encounter.reasonCode", ""),
    ("Encounter", "reason-reference"): (
        "reference",
        "Encounter.reasonReference",
        "Condition ImmunizationRecommendation Observation Procedure",
    ),
    ("Encounter", "subject-status"): None,
    ("Immunization", "reason-code"): ("token", "Immunization.reasonCode", ""),
    ("Immunization", "reason-reference"): (
        "reference",
        "Immunization.reasonReference",
        "Condition DiagnosticReport Observation",
    ),
    # Media (R4, replaced by DocumentReference after it) has no parameters in 4.2.0.
    ("Media", "based-on"): ("reference", "Media.basedOn", "CarePlan ServiceRequest"),
    ("Media", "created"): ("date", "Media.created", ""),
    ("Media", "device"): ("reference", "Media.device", "Device DeviceMetric"),
    ("Media", "encounter"): ("reference", "Media.encounter", "Encounter"),
    ("Media", "identifier"): ("token", "Media.identifier", ""),
    ("Media", "modality"): ("token", "Media.modality", ""),
    ("Media", "operator"): (
        "reference",
        "Media.operator",
        "CareTeam Device Organization Patient Practitioner PractitionerRole RelatedPerson",
    ),
    ("Media", "patient"): ("reference", "Media.subject.where(resolve() is Patient)", "Patient"),
    ("Media", "site"): ("token", "Media.bodySite", ""),
    ("Media", "status"): ("token", "Media.status", ""),
    ("Media", "subject"): (
        "reference",
        "Media.subject",
        "Device Group Location Patient Practitioner PractitionerRole Specimen",
    ),
    ("Media", "type"): ("token", "Media.type", ""),
    ("Media", "view"): ("token", "Media.view", ""),
    ("MedicationAdministration", "date"): None,
    ("MedicationAdministration", "encounter"): None,
    ("MedicationAdministration", "effective-time"): (
        "date",
        "MedicationAdministration.effective",
        "",
    ),
    ("MedicationAdministration", "context"): (
        "reference",
        "MedicationAdministration.context",
        "Encounter EpisodeOfCare",
    ),
    ("MedicationAdministration", "reason-given"): (
        "token",
        "MedicationAdministration.reasonCode",
        "",
    ),
    ("MedicationDispense", "encounter"): None,
    ("MedicationDispense", "context"): (
        "reference",
        "MedicationDispense.context",
        "Encounter EpisodeOfCare",
    ),
    ("MedicationKnowledge", "identifier"): None,
    ("MedicationRequest", "intended-dispenser"): (
        "reference",
        "MedicationRequest.dispenseRequest.performer",
        "Organization",
    ),
    ("MedicationStatement", "adherence"): None,
    ("MedicationStatement", "encounter"): None,
    ("MedicationStatement", "context"): (
        "reference",
        "MedicationStatement.context",
        "Encounter EpisodeOfCare",
    ),
    ("NamingSystem", "url"): None,
    ("NamingSystem", "version"): None,
    ("ObservationDefinition", "experimental"): None,
    ("ObservationDefinition", "status"): None,
    ("ObservationDefinition", "title"): None,
    ("Procedure", "date"): ("date", "Procedure.performed", ""),
    ("Procedure", "reason-code"): ("token", "Procedure.reasonCode", ""),
    ("Procedure", "reason-reference"): (
        "reference",
        "Procedure.reasonReference",
        "Condition DiagnosticReport DocumentReference Observation Procedure",
    ),
    ("ResearchSubject", "state"): None,
    ("SpecimenDefinition", "experimental"): None,
    ("SpecimenDefinition", "status"): None,
    ("SpecimenDefinition", "title"): None,
}

# (resource, code): the components as R4 defines them, where the shipped definitions differ.
# 4.2.0 gives DocumentReference's relatesto component the expression `code` and relation
# `target`, the other way round from the elements they name.
R4_COMPONENT_FIXES = {
    ("DocumentReference", "relationship"): [("relatesto", "target"), ("relation", "code")],
}


def r4_renamed(text):
    for old, new in R4_RENAMED_TYPES.items():
        text = re.sub(r"\b%s\b" % old, new, text)
    return text


def apply_r4_fixes(entries):
    """entries with R4_SEARCH_FIXES applied; every fix must find its parameter, or add one."""
    by_key = {(e["resource"], e["code"]): e for e in entries}
    out = []
    for e in entries:
        key = (e["resource"], e["code"])
        if key in R4_SEARCH_FIXES:
            fix = R4_SEARCH_FIXES[key]
            if fix is None:
                continue
            typ, expr, targets = fix
            e = dict(e, type=SP_TYPES[typ], expression=expr, targets=targets)
            e["url"] = "http://hl7.org/fhir/SearchParameter/%s-%s" % key
        if key in R4_COMPONENT_FIXES:
            e = dict(e, components=R4_COMPONENT_FIXES[key])
        out.append(e)
    for key, fix in R4_SEARCH_FIXES.items():
        if key in by_key:
            continue
        if fix is None:
            fail("R4_SEARCH_FIXES drops %s:%s, which the definitions do not have" % key)
        typ, expr, targets = fix
        out.append(
            {
                "code": key[1],
                "resource": key[0],
                "type": SP_TYPES[typ],
                "expression": expr,
                "targets": targets,
                "url": "http://hl7.org/fhir/SearchParameter/%s-%s" % key,
                "components": [],
            }
        )
    return out


def build_searchparams(path, types, resources):
    root = ET.parse(path).getroot()
    entries = []  # dicts: code, resource, type, expression, targets, url, components
    dropped = set()
    unmatched = []

    def val(sp, tag):
        e = sp.find(FHIR + tag)
        return e.get("value") if e is not None else None

    # A composite's components name their parameters by url: (base, url) -> code.
    code_of_url = {}
    for sp in root.iter(FHIR + "SearchParameter"):
        if val(sp, "url"):
            code_of_url[r4_renamed(val(sp, "url"))] = val(sp, "code")

    for sp in root.iter(FHIR + "SearchParameter"):
        code = val(sp, "code")
        bases = [r4_renamed(b.get("value")) for b in sp.findall(FHIR + "base")]
        typ = SP_TYPES[val(sp, "type")]
        expr = r4_renamed(val(sp, "expression") or "")
        targets = " ".join(sorted(r4_renamed(t.get("value")) for t in sp.findall(FHIR + "target")))
        url = val(sp, "url")
        url = r4_renamed(url) if url else url
        components = []
        for comp in sp.findall(FHIR + "component"):
            curl = r4_renamed(val(comp, "definition") or "")
            if curl not in code_of_url:
                fail("%s: component %s is no search parameter of the definitions" % (url, curl))
            components.append((code_of_url[curl], val(comp, "expression") or ""))
        parts = split_union(expr)
        for base in bases:
            if base not in resources and base not in ("Resource", "DomainResource"):
                dropped.add(base)
                continue
            mine = [p for p in parts if part_subject(p) == base]
            if parts and not mine:
                if len(bases) == 1:
                    mine = parts  # expressions that do not start from the base type
                else:
                    # The base list names a type the expression forgets (date: CareTeam):
                    # nothing to evaluate, so no entry.
                    unmatched.append("%s:%s" % (base, code))
                    continue
            entries.append(
                {
                    "code": code,
                    "resource": base,
                    "type": typ,
                    "expression": " | ".join(mine),
                    "targets": targets,
                    "url": url,
                    "components": components,
                }
            )

    entries = apply_r4_fixes(entries)
    entries.sort(key=lambda e: (e["resource"], e["code"]))
    lists = {r: [] for r in resources}
    for i, e in enumerate(entries):
        if e["resource"] == "Resource":
            applies = resources
        elif e["resource"] == "DomainResource":
            applies = [r for r in resources if types[r]["domain"]]
        else:
            applies = [e["resource"]]
        for r in applies:
            lists[r].append(i)
    for r in resources:
        seen = {}
        for i in lists[r]:
            code = entries[i]["code"]
            if code in seen:
                fail("%s: search parameter %s defined twice" % (r, code))
            seen[code] = i
        lists[r].sort(key=lambda i: entries[i]["code"].encode())
    return entries, lists, sorted(dropped), unmatched


FHIRPATH_FUNCS = {"where", "as", "ofType", "exists", "resolve", "extension", "first", "is", "empty", "not"}


def unresolved_parts(entries, types):
    """Expression parts whose element path does not exist in R4 (search-parameters.xml may be
    of a later version than the schema): they are kept, and listed for whoever reads the output."""
    bad = []
    for e in entries:
        for part in split_union(e["expression"]):
            m = re.match(r"\(*\s*([A-Za-z][A-Za-z0-9]*)((?:\.[A-Za-z][A-Za-z0-9]*)*)", part)
            if not m or m.group(1) != e["resource"] or m.group(1) not in types:
                continue
            cur = m.group(1)
            for step in m.group(2).split(".")[1:]:
                if step in FHIRPATH_FUNCS:
                    break
                el = [x for x in types[cur]["elems"] if step in (x["name"], x["base"])]
                if not el:
                    bad.append("%s:%s (%s)" % (e["resource"], e["code"], part))
                    break
                cur = el[0]["type"]
                if not types[cur]["elems"]:
                    break
    return bad


# --- Output.


def emit(out, types, resources, entries, lists, dropped, bad, sources):
    names = sorted(types, key=lambda n: n.encode())
    index = {n: i for i, n in enumerate(names)}
    w = out.append
    w("/* The FHIR R4 type and search-parameter tables behind fhir/meta.c, GENERATED by")
    w(" * tools/gen-r4-meta.py from %s;" % ", ".join(sources[:2]))
    w(" * do not edit: change the generator and regenerate (docs/fhir-model.md). */")
    w('#include "config.h"')
    w("")
    w('#include "fhir/meta.h"')
    w("")
    w("/* Declared in fhir/meta.c, the only user. */")
    w("extern const fhir_type_t fhir_r4_types[];")
    w("extern const size_t fhir_r4_ntypes;")
    w("extern const uint16_t fhir_r4_elem_by_name[];")
    w("extern const uint32_t fhir_r4_elem_by_name_start[];")
    w("extern const uint16_t fhir_r4_elem_type[];")
    w("extern const uint16_t fhir_r4_resources[];")
    w("extern const size_t fhir_r4_nresources;")
    w("extern const fhir_searchparam_t fhir_r4_searchparams[];")
    w("extern const fhir_searchparam_t *const fhir_r4_sp_lists[];")
    w("extern const uint32_t fhir_r4_sp_list_start[];")
    w("")
    w("/* clang-format off */")
    w("")
    if dropped:
        w("/* Search parameters whose base is not an R4 resource were left out:")
        for line in textwrap.wrap(", ".join(dropped), 90):
            w(" *   " + line)
        w(" */")
        w("")
    if bad:
        w("/* Search parameter expressions naming elements that R4 does not have (kept as given):")
        for b in bad:
            w(" *   " + b.replace("*/", "* /"))
        w(" */")
        w("")
    for n in names:
        t = types[n]
        if not t["elems"]:
            continue
        w("static const fhir_elem_t elems_%s[] = {" % n)
        for e in t["elems"]:
            flags = " | ".join(e["flags"]) or "0"
            w("    {%s, %s, %s, %s}," % (c_str(e["name"]), c_str(e["type"]), c_str(e["base"]), flags))
        w("};")
    w("")
    w("/* Sorted by name (byte order) for binary search. */")
    w("const fhir_type_t fhir_r4_types[] = {")
    for n in names:
        t = types[n]
        elems = "elems_%s, %d" % (n, len(t["elems"])) if t["elems"] else "NULL, 0"
        w("    {%s, %s, %s, %s, %s}," % (c_str(n), t["kind"], t["form"], c_str(t["pattern"]), elems))
    w("};")
    w("const size_t fhir_r4_ntypes = %d;" % len(names))
    w("")
    w("/* Per type, its element indices in name order; type i's run starts at start[i]. */")
    w("const uint16_t fhir_r4_elem_by_name[] = {")
    starts, pos = [], 0
    for n in names:
        elems = types[n]["elems"]
        starts.append(pos)
        order = sorted(range(len(elems)), key=lambda i: elems[i]["name"].encode())
        if order:
            w("    " + ", ".join(str(i) for i in order) + ",")
        pos += len(order)
    if pos == 0:
        w("    0,")
    w("};")
    starts.append(pos)
    w("const uint32_t fhir_r4_elem_by_name_start[] = {")
    for i in range(0, len(starts), 12):
        w("    " + ", ".join(str(s) for s in starts[i : i + 12]) + ",")
    w("};")
    w("")
    w("/* Per type, the fhir_r4_types index of each element's type (same runs as above;")
    w(" * 0xffff: ResourceList, any resource). */")
    w("const uint16_t fhir_r4_elem_type[] = {")
    for n in names:
        elems = types[n]["elems"]
        if elems:
            idx = [str(index[e["type"]]) if e["type"] in index else "0xffff" for e in elems]
            w("    " + ", ".join(idx) + ",")
    if pos == 0:
        w("    0,")
    w("};")
    w("")
    w("/* Indices into fhir_r4_types of the resources, in name order. */")
    w("const uint16_t fhir_r4_resources[] = {")
    for i in range(0, len(resources), 12):
        w("    " + ", ".join(str(index[r]) for r in resources[i : i + 12]) + ",")
    w("};")
    w("const size_t fhir_r4_nresources = %d;" % len(resources))
    w("")
    w("/* The components of the composite parameters, each one's together. */")
    w("static const fhir_sp_component_t fhir_r4_sp_components[] = {")
    comp_at = []
    ncomp = 0
    for e in entries:
        comp_at.append(ncomp)
        for code, expr in e["components"]:
            w("    {%s, %s}," % (c_str(code), c_str(expr)))
            ncomp += 1
    w("};")
    w("")
    w("const fhir_searchparam_t fhir_r4_searchparams[] = {")
    for e, at in zip(entries, comp_at):
        comps = "&fhir_r4_sp_components[%d], %d" % (at, len(e["components"])) if e["components"] else "NULL, 0"
        w(
            "    {%s, %s, %s, %s, %s, %s, %s},"
            % (
                c_str(e["code"]),
                c_str(e["resource"]),
                e["type"],
                c_str(e["expression"]),
                c_str(e["targets"]),
                c_str(e["url"]),
                comps,
            )
        )
    w("};")
    w("")
    w("/* Per resource (in fhir_r4_resources order), its parameters sorted by code. */")
    w("const fhir_searchparam_t *const fhir_r4_sp_lists[] = {")
    starts, pos = [], 0
    for r in resources:
        starts.append(pos)
        w("    /* %s */" % r)
        for i in lists[r]:
            w("    &fhir_r4_searchparams[%d]," % i)
        pos += len(lists[r])
    w("};")
    starts.append(pos)
    w("const uint32_t fhir_r4_sp_list_start[] = {")
    for i in range(0, len(starts), 12):
        w("    " + ", ".join(str(s) for s in starts[i : i + 12]) + ",")
    w("};")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.dirname(here)
    defs_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(src, "..", "shared", "fhir-r4")
    output = sys.argv[2] if len(sys.argv) > 2 else os.path.join(src, "fhir", "r4_meta.c")

    with open(os.path.join(defs_dir, "fhir.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    xsd = xsd_load(os.path.join(defs_dir, "xsd", "fhir-single.xsd"))
    added, removed = [], []
    types, resources = build_types(schema, xsd, added, removed)
    entries, lists, dropped, unmatched = build_searchparams(
        os.path.join(defs_dir, "search-parameters.xml"), types, resources
    )
    bad = unresolved_parts(entries, types)
    out = []
    emit(
        out,
        types,
        resources,
        entries,
        lists,
        dropped,
        bad,
        ["fhir.schema.json, xsd/fhir-single.xsd", "search-parameters.xml"],
    )
    with open(output, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print(
        "gen-r4-meta: %d types (%d resources), %d search parameter entries -> %s"
        % (len(types), len(resources), len(entries), output)
    )
    if added:
        print("gen-r4-meta: choice expansions only in the XSD, added: " + ", ".join(added))
    if unmatched:
        print("gen-r4-meta: bases without an expression part, left out: " + ", ".join(unmatched))
    if bad:
        print("gen-r4-meta: %d search expression parts name elements not in R4 (see the output)" % len(bad))
    if removed:
        print("gen-r4-meta: elements not in the XSD, left out: " + ", ".join(removed))


if __name__ == "__main__":
    main()
