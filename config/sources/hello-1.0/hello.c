/* hello: the example repository's plain C program, with no dependencies. */
#include <stdio.h>

int main(void)
{
	puts("hello from a program Portage built");
	return 0;
}
