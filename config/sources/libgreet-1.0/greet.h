/* libgreet: the example repository's shared library. Its soname, libgreet.so.1, is the
 * package's subslot: programs built against it depend on it with `:=`. */
#ifndef GREET_H
#define GREET_H

/* Writes "PREFIX: WORDS" and a newline to standard output, the words upper-cased when `shout`
 * is non-zero. Returns 0, or -1 when the line cannot be written. */
int greet_line(const char *prefix, int argc, char *const argv[], int shout);

#endif
