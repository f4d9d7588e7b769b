/* FHIR XML in and out: libxml2 reads (safely) into the JSON-shaped tree, guided by the R4
 * metadata; the writer emits text straight into a buffer in R4 element order. */
#include "config.h"

#include "fhir/xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "fhir/meta.h"
#include "lib/err.h"
#include "lib/xalloc.h"

#define XML_MAX_BYTES_DEFAULT ((size_t)64 << 20)
#define XML_MAX_DEPTH_DEFAULT 64
#define XML_WRITE_MAX_DEPTH   256

#define FHIR_NS               "http://hl7.org/fhir"
#define XHTML_NS              "http://www.w3.org/1999/xhtml"
#define XSI_NS                "http://www.w3.org/2001/XMLSchema-instance"

/* No network, no DTD loading, no entity substitution (XML_PARSE_NOENT stays off), errors to
 * the context rather than stderr; libxml2's own limits stay on (no XML_PARSE_HUGE). */
#define XML_READ_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

void
fhir_xml_init(void)
{
	xmlInitParser();
}

/* Reading: a document with a DOCTYPE is refused as soon as the declaration is seen, before
 * any of its internal subset (entity declarations) is read. */

typedef struct {
	bool doctype;
	long line;
} xml_read_state_t;

static void
xml_on_doctype(void *ctx, const xmlChar *name, const xmlChar *ext_id, const xmlChar *sys_id)
{
	xmlParserCtxtPtr c = ctx;
	xml_read_state_t *st = c->_private;

	st->doctype = true;
	st->line = c->input != NULL ? c->input->line : 0;
	xmlStopParser(c);
}

xmlDocPtr
fhir_xml_doc_read(const char *data, size_t len, const char *encoding, int options,
		  fhir_xml_read_error_t *e)
{
	xml_read_state_t st = {false, 0};
	xmlParserCtxtPtr c;
	xmlDocPtr doc;

	memset(e, 0, sizeof(*e));
	if (len > INT32_MAX) {
		snprintf(e->msg, sizeof(e->msg), "document too large");
		return NULL;
	}
	c = xmlNewParserCtxt();
	if (c == NULL)
		abort();
	c->_private = &st;
	c->sax->internalSubset = xml_on_doctype;
	doc = xmlCtxtReadMemory(c, data, (int)len, NULL, encoding, XML_READ_OPTIONS | options);
	if (st.doctype || (doc != NULL && (doc->intSubset != NULL || doc->extSubset != NULL))) {
		e->doctype = true;
		e->line = st.line;
		xmlFreeDoc(doc);
		doc = NULL;
	} else if (doc == NULL || !c->wellFormed) {
		const xmlError *le = xmlCtxtGetLastError(c);
		const char *msg =
		    le != NULL && le->message != NULL ? le->message : "not well-formed";
		size_t mlen = strlen(msg);

		while (mlen > 0 && (msg[mlen - 1] == '\n' || msg[mlen - 1] == ' '))
			mlen--;
		snprintf(e->msg, sizeof(e->msg), "%.*s", (int)mlen, msg);
		if (le != NULL) {
			e->located = true;
			e->line = le->line;
			e->col = le->int2;
		}
		xmlFreeDoc(doc);
		doc = NULL;
	}
	xmlFreeParserCtxt(c);
	return doc;
}

/* Parses data into a document (caller frees with xmlFreeDoc), or returns NULL with err set;
 * encoding NULL follows the document's declaration. */
static xmlDocPtr
xml_doc_read(const char *data, size_t len, const char *encoding, char *err, size_t cap)
{
	fhir_xml_read_error_t e;
	xmlDocPtr doc = fhir_xml_doc_read(data, len, encoding, 0, &e);

	if (doc != NULL)
		return doc;
	if (e.doctype)
		snprintf(err, cap, "a DOCTYPE is not allowed");
	else if (e.located)
		snprintf(err, cap, "line %ld, column %d: %s", e.line, e.col, e.msg);
	else
		snprintf(err, cap, "%s", e.msg);
	return NULL;
}

typedef struct {
	arena_t *a;
	size_t depth, max_depth;
	char *err;
	size_t cap;
	int rc;
} xml_parse_t;

static bool
xml_node_in_ns(const xmlNode *n, const char *ns)
{
	return n->ns != NULL && strcmp((const char *)n->ns->href, ns) == 0;
}

static int
xml_parse_fail(xml_parse_t *p, const xmlNode *n, int rc, const char *what, const char *name)
{
	if (p->rc == 0) {
		snprintf(p->err, p->cap, "line %ld: %s%s%s%s", xmlGetLineNo(n), what,
			 name != NULL ? " '" : "", name != NULL ? name : "",
			 name != NULL ? "'" : "");
		p->rc = rc;
	}
	return p->rc;
}

/* An attribute's value copied into the arena. */
static slice_t
xml_attr_value(xml_parse_t *p, xmlAttr *attr)
{
	xmlChar *v;
	slice_t s;

	if (attr->children != NULL && attr->children->next == NULL &&
	    attr->children->type == XML_TEXT_NODE)
		return arena_slice_dup(p->a, slice_cstr((const char *)attr->children->content));
	v = xmlNodeGetContent((xmlNode *)attr);
	s = arena_slice_dup(p->a, slice_cstr(v != NULL ? (const char *)v : ""));
	xmlFree(v);
	return s;
}

/* Comments, processing instructions and whitespace may sit between FHIR elements. */
static int
xml_check_other(xml_parse_t *p, const xmlNode *c)
{
	if (c->type == XML_COMMENT_NODE || c->type == XML_PI_NODE)
		return 0;
	if (c->type == XML_TEXT_NODE) {
		for (const xmlChar *s = c->content; *s != '\0'; s++)
			if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
				return xml_parse_fail(p, c, -FG_EPARSE, "unexpected text", NULL);
		return 0;
	}
	return xml_parse_fail(p, c, -FG_EPARSE, "unexpected content", NULL);
}

static bool
xml_is_json_number(slice_t s)
{
	size_t i = 0;

	if (i < s.len && s.ptr[i] == '-')
		i++;
	if (i >= s.len || s.ptr[i] < '0' || s.ptr[i] > '9')
		return false;
	if (s.ptr[i] == '0')
		i++;
	else
		while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9')
			i++;
	if (i < s.len && s.ptr[i] == '.') {
		size_t d = ++i;

		while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	if (i < s.len && (s.ptr[i] == 'e' || s.ptr[i] == 'E')) {
		size_t d;

		i++;
		if (i < s.len && (s.ptr[i] == '+' || s.ptr[i] == '-'))
			i++;
		d = i;
		while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	return i == s.len;
}

/* The JSON value of a primitive's value attribute, typed by its json_form. */
static fhir_node_t *
xml_primitive_value(xml_parse_t *p, const xmlNode *n, const fhir_type_t *t, slice_t v)
{
	switch (t->json_form) {
	case FHIR_JSON_BOOL:
		v = slice_trim(v);
		if (slice_eq_cstr(v, "true") || slice_eq_cstr(v, "false"))
			return fhir_bool_new(p->a, v.ptr[0] == 't');
		xml_parse_fail(p, n, -FG_EPARSE, "not a boolean value in", (const char *)n->name);
		return NULL;
	case FHIR_JSON_NUMBER:
		v = slice_trim(v);
		if (xml_is_json_number(v))
			return fhir_number_new(p->a, v);
		xml_parse_fail(p, n, -FG_EPARSE, "not a number value in", (const char *)n->name);
		return NULL;
	case FHIR_JSON_STRING:
		break;
	}
	return fhir_string_new(p->a, v);
}

static int xml_parse_children(xml_parse_t *p, const xmlNode *n, const fhir_type_t *t,
			      fhir_node_t *obj, bool attrs);
static fhir_node_t *xml_parse_resource(xml_parse_t *p, const xmlNode *n);

/* A primitive element: its value, and a companion object for its id and extensions (NULL
 * when it has neither). */
static int
xml_parse_primitive(xml_parse_t *p, const xmlNode *n, const fhir_type_t *t, fhir_node_t **val,
		    fhir_node_t **ext)
{
	const fhir_type_t *elem_t = fhir_meta_type(SLICE_LIT("Element"));

	*val = NULL;
	*ext = NULL;
	for (xmlAttr *at = n->properties; at != NULL; at = at->next) {
		if (at->ns != NULL && strcmp((const char *)at->ns->href, XSI_NS) == 0)
			continue;
		if (at->ns == NULL && strcmp((const char *)at->name, "value") == 0) {
			*val = xml_primitive_value(p, n, t, xml_attr_value(p, at));
			if (*val == NULL)
				return p->rc;
		} else if (at->ns == NULL && strcmp((const char *)at->name, "id") == 0) {
			if (*ext == NULL)
				*ext = fhir_object_new(p->a);
			fhir_object_set_cstr(p->a, *ext, "id",
					     fhir_string_new(p->a, xml_attr_value(p, at)));
		} else {
			return xml_parse_fail(p, n, -FG_EPARSE, "unknown attribute",
					      (const char *)at->name);
		}
	}
	if (n->children != NULL) {
		fhir_node_t *e = *ext != NULL ? *ext : fhir_object_new(p->a);

		/* Its attributes were read above; its children are Element's: extensions. */
		if (xml_parse_children(p, n, elem_t, e, false) < 0)
			return p->rc;
		if (fhir_object_count(e) > 0)
			*ext = e;
	}
	if (*val == NULL && *ext == NULL)
		return xml_parse_fail(p, n, -FG_EPARSE, "no value, id or extension in",
				      (const char *)n->name);
	return 0;
}

/* The narrative's xhtml div, kept as the text of its serialized XML. */
static fhir_node_t *
xml_parse_div(xml_parse_t *p, const xmlNode *n)
{
	xmlBufferPtr b;
	fhir_node_t *s;
	bool declared = false;

	if (!xml_node_in_ns(n, XHTML_NS) || strcmp((const char *)n->name, "div") != 0) {
		xml_parse_fail(p, n, -FG_EPARSE, "narrative must be an xhtml div", NULL);
		return NULL;
	}
	/* Serialized alone, the div must carry its namespace declaration itself. */
	for (const xmlNs *ns = n->nsDef; ns != NULL; ns = ns->next)
		if (ns->prefix == NULL && strcmp((const char *)ns->href, XHTML_NS) == 0)
			declared = true;
	if (!declared || n->ns->prefix != NULL) {
		xml_parse_fail(p, n, -FG_EPARSE,
			       "the div must declare xmlns=\"" XHTML_NS "\" itself", NULL);
		return NULL;
	}
	b = xmlBufferCreate();
	if (b == NULL)
		abort();
	xmlNodeDump(b, n->doc, (xmlNode *)n, 0, 0);
	s = fhir_string_new(
	    p->a, slice_make((const char *)xmlBufferContent(b), (size_t)xmlBufferLength(b)));
	xmlBufferFree(b);
	return s;
}

/* Element names in the metadata are short; this fits "_" and the longest. */
#define XML_KEY_MAX 128

/* "_name", the JSON companion of primitive element name, in buf. */
static slice_t
xml_companion_key(const char *name, char *buf, size_t cap)
{
	size_t n = strlen(name);

	if (n + 1 > cap)
		abort(); /* not with R4 names: the longest is under 64 bytes */
	buf[0] = '_';
	memcpy(buf + 1, name, n);
	return slice_make(buf, n + 1);
}

/* Appends to the array member key of obj, creating it. */
static fhir_node_t *
xml_array_member(xml_parse_t *p, fhir_node_t *obj, slice_t key)
{
	fhir_node_t *arr = fhir_object_get(obj, key);

	if (arr == NULL) {
		arr = fhir_array_new(p->a);
		fhir_object_set(p->a, obj, key, arr);
	}
	return arr;
}

/* A repeating primitive: values in `name`, ids and extensions in `_name`, aligned by index
 * with null where an item has none. */
static void
xml_add_primitive_item(xml_parse_t *p, fhir_node_t *obj, const char *name, fhir_node_t *val,
		       fhir_node_t *ext)
{
	char key[XML_KEY_MAX];
	slice_t ext_key = xml_companion_key(name, key, sizeof(key));
	fhir_node_t *vals = xml_array_member(p, obj, slice_cstr(name)), *exts;

	exts = fhir_object_get(obj, ext_key);
	if (exts == NULL && ext != NULL) {
		exts = fhir_array_new(p->a);
		for (size_t i = 0; i < fhir_array_len(vals); i++)
			fhir_array_append(p->a, exts, fhir_null_new(p->a));
		fhir_object_set(p->a, obj, ext_key, exts);
	}
	fhir_array_append(p->a, vals, val != NULL ? val : fhir_null_new(p->a));
	if (exts != NULL)
		fhir_array_append(p->a, exts, ext != NULL ? ext : fhir_null_new(p->a));
}

/* Values arrays left all null (items with extensions only) go: `_name` says everything. */
static void
xml_drop_null_arrays(fhir_node_t *obj)
{
	size_t i = 0;

	while (i < fhir_object_count(obj)) {
		fhir_node_t *v = fhir_object_value_at(obj, i);
		size_t k, n = fhir_array_len(v);

		for (k = 0; k < n; k++)
			if (fhir_node_kind(fhir_array_at(v, k)) != FHIR_NULL)
				break;
		if (fhir_node_kind(v) == FHIR_ARRAY && n > 0 && k == n)
			fhir_object_remove(obj, fhir_object_key_at(obj, i));
		else
			i++;
	}
}

static int
xml_parse_element(xml_parse_t *p, const xmlNode *c, const fhir_type_t *t, fhir_node_t *obj)
{
	const fhir_elem_t *e;
	const fhir_type_t *et;
	fhir_node_t *val = NULL, *ext = NULL;
	char key[XML_KEY_MAX];
	bool array;

	if (!xml_node_in_ns(c, FHIR_NS))
		return xml_parse_fail(p, c, -FG_EPARSE, "element outside the FHIR namespace",
				      (const char *)c->name);
	e = fhir_meta_elem(t, slice_cstr((const char *)c->name));
	if (e == NULL || (e->flags & FHIR_ELEM_ATTRIBUTE))
		return xml_parse_fail(p, c, -FG_EPARSE, "unknown element", (const char *)c->name);
	array = (e->flags & FHIR_ELEM_ARRAY) != 0;
	if (!array && (fhir_object_get_cstr(obj, e->name) != NULL ||
		       fhir_object_get(obj, xml_companion_key(e->name, key, sizeof(key))) != NULL))
		return xml_parse_fail(p, c, -FG_EPARSE, "repeated element", e->name);
	et = fhir_meta_elem_type(t, e);
	if (et == NULL) { /* ResourceList: one resource, wrapped in an element of its type */
		const xmlNode *r = NULL;

		for (const xmlNode *k = c->children; k != NULL; k = k->next) {
			if (k->type != XML_ELEMENT_NODE) {
				if (xml_check_other(p, k) < 0)
					return p->rc;
			} else if (r != NULL) {
				return xml_parse_fail(p, k, -FG_EPARSE, "more than one resource in",
						      e->name);
			} else {
				r = k;
			}
		}
		if (r == NULL)
			return xml_parse_fail(p, c, -FG_EPARSE, "no resource in", e->name);
		val = xml_parse_resource(p, r);
	} else if (strcmp(e->type, "xhtml") == 0) {
		val = xml_parse_div(p, c); /* a div in the FHIR namespace: refused with a message */
	} else {
		if (et->kind == FHIR_TYPE_PRIMITIVE) {
			if (xml_parse_primitive(p, c, et, &val, &ext) < 0)
				return p->rc;
			if (array) {
				xml_add_primitive_item(p, obj, e->name, val, ext);
				return 0;
			}
		} else {
			val = fhir_object_new(p->a);
			if (xml_parse_children(p, c, et, val, true) < 0)
				return p->rc;
		}
	}
	if (p->rc < 0)
		return p->rc;
	if (array) {
		fhir_array_append(p->a, xml_array_member(p, obj, slice_cstr(e->name)), val);
		return 0;
	}
	if (val != NULL)
		fhir_object_set_cstr(p->a, obj, e->name, val);
	if (ext != NULL)
		fhir_object_set(p->a, obj, xml_companion_key(e->name, key, sizeof(key)), ext);
	return 0;
}

/* The child elements of an element of complex type t, and with attrs its attributes (id,
 * url), into obj. */
static int
xml_parse_children(xml_parse_t *p, const xmlNode *n, const fhir_type_t *t, fhir_node_t *obj,
		   bool attrs)
{
	if (++p->depth > p->max_depth) {
		xml_parse_fail(p, n, -FG_ETOOBIG, "nesting too deep", NULL);
		p->depth--;
		return p->rc;
	}
	for (xmlAttr *at = attrs ? n->properties : NULL; at != NULL; at = at->next) {
		const fhir_elem_t *e;

		if (at->ns != NULL && strcmp((const char *)at->ns->href, XSI_NS) == 0)
			continue;
		e = at->ns == NULL ? fhir_meta_elem(t, slice_cstr((const char *)at->name)) : NULL;
		if (e == NULL || !(e->flags & FHIR_ELEM_ATTRIBUTE)) {
			xml_parse_fail(p, n, -FG_EPARSE, "unknown attribute",
				       (const char *)at->name);
			break;
		}
		fhir_object_set_cstr(p->a, obj, e->name,
				     fhir_string_new(p->a, xml_attr_value(p, at)));
	}
	for (const xmlNode *c = n->children; c != NULL && p->rc == 0; c = c->next) {
		if (c->type == XML_ELEMENT_NODE) {
			/* The narrative div is the one element whose XHTML is kept whole. */
			if (strcmp(t->name, "Narrative") == 0 && xml_node_in_ns(c, XHTML_NS)) {
				fhir_node_t *div = fhir_object_get_cstr(obj, "div");

				if (div != NULL) {
					xml_parse_fail(p, c, -FG_EPARSE, "repeated element", "div");
					break;
				}
				div = xml_parse_div(p, c);
				if (div != NULL)
					fhir_object_set_cstr(p->a, obj, "div", div);
			} else {
				xml_parse_element(p, c, t, obj);
			}
		} else {
			xml_check_other(p, c);
		}
	}
	if (p->rc == 0)
		xml_drop_null_arrays(obj);
	p->depth--;
	return p->rc;
}

static fhir_node_t *
xml_parse_resource(xml_parse_t *p, const xmlNode *n)
{
	const fhir_type_t *t;
	fhir_node_t *obj;

	if (!xml_node_in_ns(n, FHIR_NS)) {
		xml_parse_fail(p, n, -FG_EPARSE, "element outside the FHIR namespace",
			       (const char *)n->name);
		return NULL;
	}
	t = fhir_meta_type(slice_cstr((const char *)n->name));
	if (t == NULL || t->kind != FHIR_TYPE_RESOURCE) {
		xml_parse_fail(p, n, -FG_EPARSE, "unknown resource type", (const char *)n->name);
		return NULL;
	}
	obj = fhir_object_new(p->a);
	fhir_object_set_cstr(p->a, obj, "resourceType", fhir_string_new(p->a, slice_cstr(t->name)));
	return xml_parse_children(p, n, t, obj, true) < 0 ? NULL : obj;
}

int
fhir_xml_parse(arena_t *a, const char *data, size_t len, const fhir_xml_limits_t *lim,
	       fhir_node_t **out, char *err, size_t cap)
{
	size_t max_bytes = lim != NULL && lim->max_bytes ? lim->max_bytes : XML_MAX_BYTES_DEFAULT;
	xml_parse_t p = {.a = a, .err = err, .cap = cap};
	xmlDocPtr doc;
	fhir_node_t *res;

	*out = NULL;
	if (cap > 0)
		err[0] = '\0';
	if (len > max_bytes) {
		snprintf(err, cap, "document of %zu bytes exceeds the limit of %zu", len,
			 max_bytes);
		return -FG_ETOOBIG;
	}
	p.max_depth = lim != NULL && lim->max_depth ? lim->max_depth : XML_MAX_DEPTH_DEFAULT;
	doc = xml_doc_read(data, len, NULL, err, cap);
	if (doc == NULL)
		return -FG_EPARSE;
	res = xml_parse_resource(&p, xmlDocGetRootElement(doc));
	xmlFreeDoc(doc);
	if (res == NULL)
		return p.rc;
	*out = res;
	return 0;
}

/* Writing. */

typedef struct {
	buf_t *out;
	bool pretty;
	size_t level;
	int rc;
	char *err;
	size_t cap;
	/* Where we are, for error messages ("Patient.contact[0].name"), formatted only then. */
	struct {
		const char *name;
		size_t index;
		bool indexed;
	} segs[32];
	size_t nsegs; /* may exceed the array: deeper segments are not kept */
} xml_write_t;

static void
xml_put(xml_write_t *w, const char *s, size_t len)
{
	if (w->rc == 0 && buf_append(w->out, s, len) < 0) {
		w->rc = -FG_ETOOBIG;
		snprintf(w->err, w->cap, "output exceeds the buffer limit");
	}
}

#define XML_PUT_LIT(w, s) xml_put((w), (s), sizeof(s) - 1)

static void
xml_put_cstr(xml_write_t *w, const char *s)
{
	xml_put(w, s, strlen(s));
}

static int
xml_write_fail(xml_write_t *w, const char *what)
{
	char path[160];
	size_t len = 0, n = w->nsegs < 32 ? w->nsegs : 32;
	bool cut = false;

	if (w->rc != 0)
		return w->rc;
	path[0] = '\0';
	/* The path is cut short rather than the message: "Patient.a[0].b...: what". */
	for (size_t i = 0; i < n && !cut; i++) {
		int k;

		if (w->segs[i].indexed)
			k = snprintf(path + len, sizeof(path) - len, "%s%s[%zu]", i > 0 ? "." : "",
				     w->segs[i].name, w->segs[i].index);
		else
			k = snprintf(path + len, sizeof(path) - len, "%s%s", i > 0 ? "." : "",
				     w->segs[i].name);
		if (k < 0 || (size_t)k >= sizeof(path) - len)
			cut = true;
		else
			len += (size_t)k;
	}
	path[len] = '\0';
	snprintf(w->err, w->cap, "%s%s: %s", path, cut || n < w->nsegs ? "..." : "", what);
	w->rc = -FG_EINVAL;
	return w->rc;
}

/* Path segments are pushed around each element; the caller restores nsegs to the result. */
static size_t
xml_path_push(xml_write_t *w, const char *name, size_t index, bool indexed)
{
	size_t old = w->nsegs;

	if (old < 32) {
		w->segs[old].name = name;
		w->segs[old].index = index;
		w->segs[old].indexed = indexed;
	}
	w->nsegs++;
	return old;
}

static void
xml_indent(xml_write_t *w)
{
	static const char spaces[] = "                                ";

	if (!w->pretty)
		return;
	for (size_t i = 0; i < w->level; i += 16) {
		size_t n = w->level - i < 16 ? w->level - i : 16;

		xml_put(w, spaces, 2 * n);
	}
}

static void
xml_newline(xml_write_t *w)
{
	if (w->pretty)
		XML_PUT_LIT(w, "\n");
}

size_t
fhir_xml_char_len(const unsigned char *s, size_t len)
{
	unsigned c = s[0];
	uint32_t cp;
	size_t n;

	if (c < 0x80)
		return c >= 0x20 || c == '\t' || c == '\n' || c == '\r' ? 1 : 0;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (n > len)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
		return 0;
	return n;
}

/* An attribute value: markup characters and whitespace that attribute normalization would
 * fold become references; what XML 1.0 cannot carry is refused. */
static int
xml_put_escaped(xml_write_t *w, slice_t s)
{
	const unsigned char *p = (const unsigned char *)s.ptr;
	size_t run = 0, i = 0;

	while (i < s.len) {
		const char *rep = NULL;
		size_t n;

		switch (p[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\t':
			rep = "&#9;";
			break;
		case '\n':
			rep = "&#10;";
			break;
		case '\r':
			rep = "&#13;";
			break;
		default:
			break;
		}
		if (rep != NULL) {
			xml_put(w, s.ptr + run, i - run);
			xml_put_cstr(w, rep);
			run = ++i;
			continue;
		}
		if (p[i] >= 0x20 && p[i] < 0x80) {
			i++;
			continue;
		}
		n = fhir_xml_char_len(p + i, s.len - i);
		if (n == 0)
			return xml_write_fail(w, "a character XML cannot carry (or not UTF-8)");
		i += n;
	}
	xml_put(w, s.ptr + run, s.len - run);
	return w->rc;
}

static void
xml_put_attr(xml_write_t *w, const char *name, slice_t value)
{
	XML_PUT_LIT(w, " ");
	xml_put_cstr(w, name);
	XML_PUT_LIT(w, "=\"");
	xml_put_escaped(w, value);
	XML_PUT_LIT(w, "\"");
}

/* The narrative div: it must be one well-formed XHTML div element, written as it is (only
 * given the XHTML namespace when it has none). */
static int
xml_write_div(xml_write_t *w, const fhir_node_t *v)
{
	slice_t s = fhir_node_text(v);
	char err[160];
	xmlDocPtr doc;
	xmlNodePtr root;
	bool no_ns;

	if (fhir_node_kind(v) != FHIR_STRING)
		return xml_write_fail(w, "the div must be a string");
	while (s.len > 0 &&
	       (s.ptr[0] == ' ' || s.ptr[0] == '\n' || s.ptr[0] == '\t' || s.ptr[0] == '\r')) {
		s.ptr++;
		s.len--;
	}
	if (s.len < 5 || memcmp(s.ptr, "<div", 4) != 0 ||
	    !(s.ptr[4] == ' ' || s.ptr[4] == '>' || s.ptr[4] == '/' || s.ptr[4] == '\n' ||
	      s.ptr[4] == '\t' || s.ptr[4] == '\r'))
		return xml_write_fail(w, "the narrative must start with <div");
	doc = xml_doc_read(s.ptr, s.len, "UTF-8", err, sizeof(err));
	if (doc == NULL) {
		char msg[200];

		snprintf(msg, sizeof(msg), "the div is not well-formed XML (%s)", err);
		return xml_write_fail(w, msg);
	}
	root = xmlDocGetRootElement(doc);
	no_ns = root->ns == NULL;
	/* Without a namespace the div gets ours, unless it says xmlns="" itself. */
	for (const xmlNs *ns = root->nsDef; no_ns && ns != NULL; ns = ns->next)
		if (ns->prefix == NULL)
			no_ns = false;
	if (root->ns == NULL ? !no_ns : strcmp((const char *)root->ns->href, XHTML_NS) != 0) {
		xmlFreeDoc(doc);
		return xml_write_fail(w, "the div is not in the XHTML namespace");
	}
	xmlFreeDoc(doc);
	xml_indent(w);
	if (no_ns) {
		XML_PUT_LIT(w, "<div xmlns=\"" XHTML_NS "\"");
		xml_put(w, s.ptr + 4, s.len - 4);
	} else {
		xml_put(w, s.ptr, s.len);
	}
	xml_newline(w);
	return w->rc;
}

static int xml_write_object(xml_write_t *w, const char *name, const fhir_node_t *obj,
			    const fhir_type_t *t, bool root);

static int
xml_write_resource(xml_write_t *w, const fhir_node_t *res, bool root)
{
	slice_t rt;
	const fhir_type_t *t;
	size_t old;
	int rc;

	if (fhir_node_kind(res) != FHIR_OBJECT)
		return xml_write_fail(w, "a resource must be an object");
	rt = fhir_resource_type(res);
	t = fhir_meta_type(rt);
	if (t == NULL || t->kind != FHIR_TYPE_RESOURCE)
		return xml_write_fail(w, "unknown resourceType");
	old = xml_path_push(w, t->name, 0, false);
	rc = xml_write_object(w, t->name, res, t, root);
	w->nsegs = old;
	return rc;
}

/* One primitive element: value attribute, id attribute, extensions. */
static int
xml_write_primitive(xml_write_t *w, const char *name, const fhir_type_t *t, const fhir_node_t *v,
		    const fhir_node_t *ext)
{
	const fhir_node_t *id = NULL, *exts = NULL;
	fhir_kind_t want;

	if (ext != NULL && fhir_node_kind(ext) != FHIR_NULL) {
		if (fhir_node_kind(ext) != FHIR_OBJECT)
			return xml_write_fail(w, "a _ companion must be an object");
		for (size_t i = 0; i < fhir_object_count(ext); i++) {
			slice_t k = fhir_object_key_at(ext, i);

			if (slice_eq_cstr(k, "id"))
				id = fhir_object_value_at(ext, i);
			else if (slice_eq_cstr(k, "extension"))
				exts = fhir_object_value_at(ext, i);
			else
				return xml_write_fail(w,
						      "a _ companion holds only id and extension");
		}
		if (id != NULL && fhir_node_kind(id) != FHIR_STRING)
			return xml_write_fail(w, "id must be a string");
		if (exts != NULL && fhir_node_kind(exts) != FHIR_ARRAY)
			return xml_write_fail(w, "extension must be an array");
		if (fhir_array_len(exts) == 0)
			exts = NULL; /* nothing to write, so nothing to read back */
	}
	if (v != NULL && fhir_node_kind(v) == FHIR_NULL)
		v = NULL;
	if (v == NULL && id == NULL && exts == NULL)
		return xml_write_fail(w, "a primitive needs a value or extensions");
	want = t->json_form == FHIR_JSON_BOOL     ? FHIR_BOOL
	       : t->json_form == FHIR_JSON_NUMBER ? FHIR_NUMBER
						  : FHIR_STRING;
	if (v != NULL && fhir_node_kind(v) != want)
		return xml_write_fail(w, want == FHIR_BOOL     ? "expected a boolean"
					 : want == FHIR_NUMBER ? "expected a number"
							       : "expected a string");
	xml_indent(w);
	XML_PUT_LIT(w, "<");
	xml_put_cstr(w, name);
	if (id != NULL)
		xml_put_attr(w, "id", fhir_node_text(id));
	if (v != NULL) {
		if (want == FHIR_BOOL)
			xml_put_attr(w, "value",
				     fhir_node_bool(v) ? SLICE_LIT("true") : SLICE_LIT("false"));
		else
			xml_put_attr(w, "value", fhir_node_text(v));
	}
	if (exts == NULL) {
		XML_PUT_LIT(w, "/>");
		xml_newline(w);
		return w->rc;
	}
	XML_PUT_LIT(w, ">");
	xml_newline(w);
	w->level++;
	{
		const fhir_type_t *ext_t = fhir_meta_type(SLICE_LIT("Extension"));
		const fhir_node_t *item;
		size_t i;

		FHIR_ARRAY_FOREACH(exts, i, item) {
			size_t old = xml_path_push(w, "extension", i, true);

			xml_write_object(w, "extension", item, ext_t, false);
			w->nsegs = old;
			if (w->rc < 0)
				return w->rc;
		}
	}
	w->level--;
	xml_indent(w);
	XML_PUT_LIT(w, "</");
	xml_put_cstr(w, name);
	XML_PUT_LIT(w, ">");
	xml_newline(w);
	return w->rc;
}

/* One occurrence of element e with value v (and, for primitives, companion ext). */
static int
xml_write_value(xml_write_t *w, const fhir_type_t *owner, const fhir_elem_t *e,
		const fhir_node_t *v, const fhir_node_t *ext)
{
	const fhir_type_t *t = fhir_meta_elem_type(owner, e);

	if (t == NULL) { /* ResourceList */
		xml_indent(w);
		XML_PUT_LIT(w, "<");
		xml_put_cstr(w, e->name);
		XML_PUT_LIT(w, ">");
		xml_newline(w);
		w->level++;
		xml_write_resource(w, v, false);
		w->level--;
		xml_indent(w);
		XML_PUT_LIT(w, "</");
		xml_put_cstr(w, e->name);
		XML_PUT_LIT(w, ">");
		xml_newline(w);
		return w->rc;
	}
	if (strcmp(e->type, "xhtml") == 0)
		return xml_write_div(w, v);
	if (t->kind == FHIR_TYPE_PRIMITIVE)
		return xml_write_primitive(w, e->name, t, v, ext);
	if (fhir_node_kind(v) != FHIR_OBJECT)
		return xml_write_fail(w, "expected an object");
	return xml_write_object(w, e->name, v, t, false);
}

/* A member of the object being written, placed by its element's index in R4 order. */
typedef struct {
	int index;
	const fhir_elem_t *elem;
	const fhir_node_t *val, *ext;
} xml_member_t;

static int
xml_write_members(xml_write_t *w, const fhir_type_t *owner, const xml_member_t *m, size_t n)
{
	for (size_t k = 0; k < n && w->rc == 0; k++) {
		const fhir_elem_t *e = m[k].elem;
		size_t old;

		if (e->flags & FHIR_ELEM_ATTRIBUTE)
			continue;
		if (!(e->flags & FHIR_ELEM_ARRAY)) {
			old = xml_path_push(w, e->name, 0, false);
			if (m[k].val != NULL && fhir_node_kind(m[k].val) == FHIR_ARRAY)
				xml_write_fail(w, "expected one value, not an array");
			else if (m[k].ext != NULL && fhir_node_kind(m[k].ext) == FHIR_ARRAY)
				xml_write_fail(w, "expected one _ companion, not an array");
			else
				xml_write_value(w, owner, e, m[k].val, m[k].ext);
			w->nsegs = old;
			continue;
		}
		{
			const fhir_node_t *vals = m[k].val, *exts = m[k].ext;
			size_t nv = fhir_array_len(vals), ne = fhir_array_len(exts);
			size_t count = nv > ne ? nv : ne;

			old = xml_path_push(w, e->name, 0, false);
			if ((vals != NULL && fhir_node_kind(vals) != FHIR_ARRAY) ||
			    (exts != NULL && fhir_node_kind(exts) != FHIR_ARRAY)) {
				xml_write_fail(w, "expected an array");
			} else if (vals != NULL && exts != NULL && nv != ne) {
				xml_write_fail(w, "the _ companion array differs in length");
			}
			w->nsegs = old;
			for (size_t i = 0; i < count && w->rc == 0; i++) {
				old = xml_path_push(w, e->name, i, true);
				xml_write_value(w, owner, e, fhir_array_at(vals, i),
						fhir_array_at(exts, i));
				w->nsegs = old;
			}
		}
	}
	return w->rc;
}

/* Insertion sort: members almost always arrive in R4 order already, which makes it linear. */
static void
xml_members_sort(xml_member_t *m, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		xml_member_t x = m[i];
		size_t j = i;

		while (j > 0 && m[j - 1].index > x.index) {
			m[j] = m[j - 1];
			j--;
		}
		m[j] = x;
	}
}

static int
xml_write_object(xml_write_t *w, const char *name, const fhir_node_t *obj, const fhir_type_t *t,
		 bool root)
{
	xml_member_t local[48], *m = local;
	size_t n = 0, count = fhir_object_count(obj);
	bool children = false;

	if (fhir_node_kind(obj) != FHIR_OBJECT)
		return xml_write_fail(w, "expected an object");
	/* Parsed trees are shallow (their limits); this guards the stack against built ones. */
	if (w->level > XML_WRITE_MAX_DEPTH)
		return xml_write_fail(w, "nesting too deep");
	if (count > sizeof(local) / sizeof(local[0]))
		m = xreallocarray(NULL, count, sizeof(*m));
	for (size_t i = 0; i < count && w->rc == 0; i++) {
		slice_t key = fhir_object_key_at(obj, i);
		bool companion = key.len > 1 && key.ptr[0] == '_';
		slice_t ename = companion ? slice_make(key.ptr + 1, key.len - 1) : key;
		int idx;
		size_t k;

		if (t->kind == FHIR_TYPE_RESOURCE && slice_eq_cstr(key, "resourceType"))
			continue;
		idx = fhir_meta_elem_index(t, ename);
		if (idx < 0 || (companion && !(t->elems[idx].flags & FHIR_ELEM_PRIMITIVE))) {
			char what[160];

			snprintf(what, sizeof(what), "unknown element '%.*s'",
				 (int)(key.len < 100 ? key.len : 100), key.ptr);
			xml_write_fail(w, what);
			break;
		}
		if (companion && (t->elems[idx].flags & FHIR_ELEM_ATTRIBUTE)) {
			char what[160];

			snprintf(what, sizeof(what),
				 "'%.*s' cannot be written in XML (%s is an attribute)",
				 (int)key.len, key.ptr, t->elems[idx].name);
			xml_write_fail(w, what);
			break;
		}
		/* A value and its companion share one entry. */
		for (k = 0; k < n && m[k].index != idx; k++)
			;
		if (k == n) {
			m[n].index = idx;
			m[n].elem = &t->elems[idx];
			m[n].val = m[n].ext = NULL;
			n++;
		}
		if (companion)
			m[k].ext = fhir_object_value_at(obj, i);
		else
			m[k].val = fhir_object_value_at(obj, i);
	}
	if (w->rc == 0) {
		xml_members_sort(m, n);
		xml_indent(w);
		XML_PUT_LIT(w, "<");
		xml_put_cstr(w, name);
		if (root)
			XML_PUT_LIT(w, " xmlns=\"" FHIR_NS "\"");
		for (size_t k = 0; k < n; k++) {
			if (m[k].elem->flags & FHIR_ELEM_ATTRIBUTE) {
				if (fhir_node_kind(m[k].val) != FHIR_STRING) {
					size_t old = xml_path_push(w, m[k].elem->name, 0, false);

					xml_write_fail(w, "expected a string");
					w->nsegs = old;
					break;
				}
				xml_put_attr(w, m[k].elem->name, fhir_node_text(m[k].val));
			} else {
				children = true;
			}
		}
	}
	if (w->rc == 0 && !children) {
		XML_PUT_LIT(w, "/>");
		xml_newline(w);
	} else if (w->rc == 0) {
		XML_PUT_LIT(w, ">");
		xml_newline(w);
		w->level++;
		xml_write_members(w, t, m, n);
		w->level--;
		xml_indent(w);
		XML_PUT_LIT(w, "</");
		xml_put_cstr(w, name);
		XML_PUT_LIT(w, ">");
		xml_newline(w);
	}
	if (m != local)
		free(m);
	return w->rc;
}

int
fhir_xml_write(const fhir_node_t *res, bool pretty, buf_t *out, char *err, size_t cap)
{
	xml_write_t w = {.out = out, .pretty = pretty, .err = err, .cap = cap};
	size_t start = out->len;

	if (cap > 0)
		err[0] = '\0';
	xml_write_resource(&w, res, true);
	if (w.rc < 0) {
		out->len = start;
		if (out->data != NULL)
			out->data[start] = '\0';
	}
	return w.rc;
}
