/* Checks of incoming resources against the R4 metadata, and JSON Patch (RFC 6902) over the
 * resource tree: pure functions of the REST layer. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fhir/meta.h"
#include "fhir/validate.h"
#include "gateway/rest_int.h"
#include "lib/err.h"

bool
rest_id_is_valid(slice_t id)
{
	/* R4's id (1 to 64 of A-Z a-z 0-9 - .) within what the store keys hold */
	return id.len <= STORE_ID_MAX && fhir_primitive_problem("id", id) == NULL;
}

bool
rest_type_is_valid(slice_t type)
{
	return fhir_meta_is_resource(type);
}

int
rest_res_validate(const fhir_node_t *res, char *err, size_t cap)
{
	arena_t *a = arena_new(1024);
	fhir_issue_t is;
	int st = 0;

	/* the first problem of structure or value; required elements are $validate's */
	if (fhir_validate(a, res, 0, &is, 1) > 0) {
		if (is.path[0] != '\0')
			snprintf(err, cap, "%s: %s", is.path, is.what);
		else
			snprintf(err, cap, "%s", is.what);
		st = 400;
	}
	arena_free(a);
	return st;
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
