/* Checks of incoming resources against the R4 metadata, and JSON Patch (RFC 6902) over the
 * resource tree: pure functions of the REST layer. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fhir/meta.h"
#include "gateway/rest_int.h"
#include "lib/err.h"

#define CHECK_DEPTH_MAX 64

bool
rest_id_is_valid(slice_t id)
{
	if (id.len == 0 || id.len > STORE_ID_MAX)
		return false;
	for (size_t i = 0; i < id.len; i++) {
		char ch = id.ptr[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

bool
rest_type_is_valid(slice_t type)
{
	return fhir_meta_is_resource(type);
}

static int check_object(const fhir_type_t *t, const fhir_node_t *obj, buf_t *path, int depth,
			char *err, size_t cap);

static int
fail(char *err, size_t cap, const buf_t *path, const char *what)
{
	snprintf(err, cap, "%s at %.*s", what, (int)path->len, path->data ? path->data : "");
	return 400;
}

/* One value (not an array) of element e of owner. */
static int
check_value(const fhir_type_t *owner, const fhir_elem_t *e, const fhir_node_t *v, bool companion,
	    buf_t *path, int depth, char *err, size_t cap)
{
	const fhir_type_t *et = fhir_meta_elem_type(owner, e);
	fhir_kind_t k = fhir_node_kind(v);

	if (companion) /* `_x`: the primitive's id and extensions */
		return k == FHIR_NULL ? 0
		       : k == FHIR_OBJECT
			   ? check_object(fhir_meta_type(SLICE_LIT("Element")), v, path, depth + 1,
					  err, cap)
			   : fail(err, cap, path, "a primitive's extension must be an object");
	if (et == NULL) { /* ResourceList: any resource */
		const fhir_type_t *rt;

		if (k != FHIR_OBJECT)
			return fail(err, cap, path, "a resource must be an object");
		rt = fhir_meta_type(fhir_resource_type(v));
		if (rt == NULL || rt->kind != FHIR_TYPE_RESOURCE)
			return fail(err, cap, path, "unknown resourceType");
		return check_object(rt, v, path, depth + 1, err, cap);
	}
	if (et->kind == FHIR_TYPE_PRIMITIVE) {
		bool ok = (et->json_form == FHIR_JSON_STRING && k == FHIR_STRING) ||
			  (et->json_form == FHIR_JSON_NUMBER && k == FHIR_NUMBER) ||
			  (et->json_form == FHIR_JSON_BOOL && k == FHIR_BOOL) || k == FHIR_NULL;

		if (!ok)
			return fail(err, cap, path, "wrong JSON type for a primitive");
		if (k == FHIR_STRING && fhir_node_text(v).len == 0)
			return fail(err, cap, path, "empty string");
		return 0;
	}
	if (k != FHIR_OBJECT)
		return fail(err, cap, path, "an object is expected");
	return check_object(et, v, path, depth + 1, err, cap);
}

static int
check_object(const fhir_type_t *t, const fhir_node_t *obj, buf_t *path, int depth, char *err,
	     size_t cap)
{
	size_t mark = path->len;

	if (depth > CHECK_DEPTH_MAX)
		return fail(err, cap, path, "nested too deeply");
	for (size_t i = 0; i < fhir_object_count(obj); i++) {
		slice_t key = fhir_object_key_at(obj, i), name = key;
		const fhir_node_t *v = fhir_object_value_at(obj, i);
		bool companion = key.len > 1 && key.ptr[0] == '_';
		const fhir_elem_t *e;
		int rc = 0;

		path->len = mark;
		buf_append_byte(path, '.');
		buf_append_slice(path, key);
		if (t->kind == FHIR_TYPE_RESOURCE && slice_eq_cstr(key, "resourceType"))
			continue;
		if (companion)
			name = slice_make(key.ptr + 1, key.len - 1);
		e = fhir_meta_elem(t, name);
		if (e == NULL || (companion && !(e->flags & FHIR_ELEM_PRIMITIVE)))
			return fail(err, cap, path, "unknown element");
		if (fhir_node_kind(v) == FHIR_ARRAY) {
			size_t j;
			const fhir_node_t *item;

			if (!(e->flags & FHIR_ELEM_ARRAY))
				return fail(err, cap, path, "an array where one value is allowed");
			if (fhir_array_len(v) == 0)
				return fail(err, cap, path, "empty array");
			FHIR_ARRAY_FOREACH(v, j, item) {
				if (rc == 0)
					rc = check_value(t, e, item, companion, path, depth, err,
							 cap);
			}
		} else if (e->flags & FHIR_ELEM_ARRAY)
			return fail(err, cap, path, "an array is expected");
		else if (fhir_node_kind(v) == FHIR_NULL)
			return fail(err, cap, path, "null");
		else
			rc = check_value(t, e, v, companion, path, depth, err, cap);
		if (rc != 0)
			return rc;
	}
	path->len = mark;
	return 0;
}

int
rest_res_validate(const fhir_node_t *res, char *err, size_t cap)
{
	const fhir_type_t *t;
	buf_t path = BUF_INIT;
	int rc;

	if (fhir_node_kind(res) != FHIR_OBJECT) {
		snprintf(err, cap, "a resource must be a JSON object");
		return 400;
	}
	t = fhir_meta_type(fhir_resource_type(res));
	if (t == NULL || t->kind != FHIR_TYPE_RESOURCE) {
		snprintf(err, cap, "unknown or missing resourceType");
		return 400;
	}
	buf_append_cstr(&path, t->name);
	rc = check_object(t, res, &path, 0, err, cap);
	buf_free(&path);
	return rc;
}

/* ---- JSON Patch ---- */

void
rest_array_insert(arena_t *a, fhir_node_t *arr, size_t i, fhir_node_t *val)
{
	size_t len = fhir_array_len(arr);

	/* Append, then shift the tail up by one. */
	fhir_array_append(a, arr, val);
	for (size_t k = len; k > i; k--)
		fhir_array_set(arr, k, fhir_array_at(arr, k - 1));
	fhir_array_set(arr, i, val);
}

/* Walks a JSON Pointer to the parent of its last token: *parent and the token (decoded). */
static int
pointer_walk(arena_t *a, fhir_node_t *doc, slice_t ptr, fhir_node_t **parent, slice_t *last)
{
	fhir_node_t *cur = doc;
	size_t i = 0;

	if (ptr.len == 0 || ptr.ptr[0] != '/')
		return -FG_EINVAL;
	for (;;) {
		size_t start = ++i;
		buf_t tok = BUF_INIT;
		slice_t t;

		while (i < ptr.len && ptr.ptr[i] != '/')
			i++;
		for (size_t k = start; k < i; k++) {
			if (ptr.ptr[k] == '~' && k + 1 < i &&
			    (ptr.ptr[k + 1] == '0' || ptr.ptr[k + 1] == '1')) {
				buf_append_byte(&tok, ptr.ptr[k + 1] == '0' ? '~' : '/');
				k++;
			} else
				buf_append_byte(&tok, ptr.ptr[k]);
		}
		t = arena_slice_dup(a, buf_slice(&tok));
		if (t.ptr == NULL)
			t = slice_make("", 0);
		buf_free(&tok);
		if (i >= ptr.len) {
			*parent = cur;
			*last = t;
			return 0;
		}
		if (fhir_node_kind(cur) == FHIR_OBJECT)
			cur = fhir_object_get(cur, t);
		else if (fhir_node_kind(cur) == FHIR_ARRAY) {
			uint64_t idx;

			cur = slice_to_u64(t, &idx) && idx < fhir_array_len(cur)
				  ? fhir_array_at(cur, idx)
				  : NULL;
		} else
			cur = NULL;
		if (cur == NULL)
			return -FG_ENOTFOUND;
	}
}

static fhir_node_t *
pointer_get(arena_t *a, fhir_node_t *doc, slice_t ptr)
{
	fhir_node_t *parent;
	slice_t last;
	uint64_t idx;

	if (ptr.len == 0)
		return doc;
	if (pointer_walk(a, doc, ptr, &parent, &last) < 0)
		return NULL;
	if (fhir_node_kind(parent) == FHIR_OBJECT)
		return fhir_object_get(parent, last);
	if (fhir_node_kind(parent) == FHIR_ARRAY && slice_to_u64(last, &idx) &&
	    idx < fhir_array_len(parent))
		return fhir_array_at(parent, idx);
	return NULL;
}

static int
pointer_remove(arena_t *a, fhir_node_t *doc, slice_t ptr)
{
	fhir_node_t *parent;
	slice_t last;
	uint64_t idx;

	if (pointer_walk(a, doc, ptr, &parent, &last) < 0)
		return -FG_ENOTFOUND;
	if (fhir_node_kind(parent) == FHIR_OBJECT)
		return fhir_object_remove(parent, last) ? 0 : -FG_ENOTFOUND;
	if (fhir_node_kind(parent) == FHIR_ARRAY && slice_to_u64(last, &idx) &&
	    idx < fhir_array_len(parent)) {
		fhir_array_remove_at(parent, idx);
		return 0;
	}
	return -FG_ENOTFOUND;
}

/* add (insert into arrays) or replace (must exist). */
static int
pointer_put(arena_t *a, fhir_node_t *doc, slice_t ptr, fhir_node_t *val, bool replace)
{
	fhir_node_t *parent;
	slice_t last;
	uint64_t idx;
	size_t len;

	if (pointer_walk(a, doc, ptr, &parent, &last) < 0)
		return -FG_ENOTFOUND;
	if (fhir_node_kind(parent) == FHIR_OBJECT) {
		if (replace && fhir_object_get(parent, last) == NULL)
			return -FG_ENOTFOUND;
		fhir_object_set(a, parent, last, val);
		return 0;
	}
	if (fhir_node_kind(parent) != FHIR_ARRAY)
		return -FG_ENOTFOUND;
	len = fhir_array_len(parent);
	if (!replace && slice_eq_cstr(last, "-")) {
		fhir_array_append(a, parent, val);
		return 0;
	}
	if (!slice_to_u64(last, &idx) || idx > len || (replace && idx == len))
		return -FG_ENOTFOUND;
	if (replace)
		fhir_array_set(parent, idx, val);
	else
		rest_array_insert(a, parent, idx, val);
	return 0;
}

int
rest_json_patch(arena_t *a, fhir_node_t **doc, const fhir_node_t *patch, char *err, size_t cap)
{
	size_t i;
	const fhir_node_t *op;

	if (fhir_node_kind(patch) != FHIR_ARRAY) {
		snprintf(err, cap, "a JSON Patch document is an array of operations");
		return 400;
	}
	FHIR_ARRAY_FOREACH(patch, i, op) {
		slice_t name = fhir_node_text(fhir_object_get_cstr(op, "op"));
		fhir_node_t *pathn = fhir_object_get_cstr(op, "path");
		fhir_node_t *val = fhir_object_get_cstr(op, "value");
		fhir_node_t *from = fhir_object_get_cstr(op, "from"), *src;
		slice_t path = fhir_node_text(pathn);
		int rc = 0;

		if (fhir_node_kind(op) != FHIR_OBJECT || pathn == NULL ||
		    fhir_node_kind(pathn) != FHIR_STRING) {
			snprintf(err, cap, "operation %zu: op and path are required", i);
			return 400;
		}
		if (path.len == 0 && !slice_eq_cstr(name, "test")) {
			snprintf(err, cap, "operation %zu: the whole resource cannot be patched",
				 i);
			return 422;
		}
		if (slice_eq_cstr(name, "add") || slice_eq_cstr(name, "replace")) {
			if (val == NULL) {
				snprintf(err, cap, "operation %zu: value is required", i);
				return 400;
			}
			rc = pointer_put(a, *doc, path, fhir_node_clone(a, val),
					 slice_eq_cstr(name, "replace"));
		} else if (slice_eq_cstr(name, "remove"))
			rc = pointer_remove(a, *doc, path);
		else if (slice_eq_cstr(name, "move") || slice_eq_cstr(name, "copy")) {
			slice_t f = fhir_node_text(from);

			if (from == NULL || (src = pointer_get(a, *doc, f)) == NULL) {
				snprintf(err, cap, "operation %zu: from does not exist", i);
				return 422;
			}
			src = fhir_node_clone(a, src);
			if (slice_eq_cstr(name, "move"))
				rc = pointer_remove(a, *doc, f);
			if (rc == 0)
				rc = pointer_put(a, *doc, path, src, false);
		} else if (slice_eq_cstr(name, "test")) {
			src = pointer_get(a, *doc, path);
			if (src == NULL || val == NULL || !fhir_node_equal(src, val)) {
				snprintf(err, cap, "operation %zu: test failed", i);
				return 422;
			}
		} else {
			snprintf(err, cap, "operation %zu: unknown op", i);
			return 400;
		}
		if (rc < 0) {
			snprintf(err, cap, "operation %zu (%.*s): path %.*s does not exist", i,
				 (int)name.len, name.ptr, (int)(path.len > 100 ? 100 : path.len),
				 path.ptr);
			return 422;
		}
	}
	return 0;
}
