/* The layout of the resource tree's nodes, for the walks in fhir/ that visit every node and
 * cannot afford a call per member (the compact JSON writer); everyone else goes through
 * tree.h. Read only: changes go through tree.c, which keeps an object's index. */
#ifndef FHIR_TREE_INT_H
#define FHIR_TREE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir/tree.h"
#include "lib/slice.h"

typedef struct {
	slice_t key;
	fhir_node_t *val;
	uint32_t rank; /* fhir_object_insert's order; 0 for members added otherwise */
} fhir_member_t;

struct fhir_node {
	fhir_kind_t kind;
	bool b;
	union {
		slice_t text; /* FHIR_STRING, FHIR_NUMBER, FHIR_RAW */
		struct {
			fhir_member_t *m;
			size_t n, cap;
			/* Open-addressing index of member positions + 1 (0: free), built only for
			 * large objects so that a hostile document with many keys stays linear. */
			uint32_t *idx;
			size_t idx_cap;
		} obj;
		struct {
			fhir_node_t **v;
			size_t n, cap;
		} arr;
	} u;
};

#endif
