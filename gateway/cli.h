/* Pieces shared by the subcommands: common options and the entry points. */
#ifndef GATEWAY_CLI_H
#define GATEWAY_CLI_H

#include "gateway/conf.h"

/* Loads the configuration for a subcommand: `-c FILE` / `--config FILE` (default: etc/fhirgate.conf
 * if it exists, else built-in defaults) and any number of `--set key=value`. Those options are
 * removed from argv (argc updated); everything else is left for the subcommand. Prints the
 * error and returns -1 on a bad config. */
int cli_config_load(int *argc, char **argv, config_t *c);

/* The config options of the last cli_config_load as arguments ("-c", FILE, "--set", KV, ...),
 * for a child process that must read the same configuration: *n of them into *out (caller
 * frees the array; the strings are borrowed). */
void cli_config_args(const char ***out, int *n);

/* Loads the configuration again from the same file and --set options as the last
 * cli_config_load (for SIGHUP). Same error handling. */
int cli_config_reload(config_t *c);

/* Each subcommand: argv[0] is its name; returns the process exit status. */
int cmd_serve(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_mappings(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_import(int argc, char **argv);

#endif
