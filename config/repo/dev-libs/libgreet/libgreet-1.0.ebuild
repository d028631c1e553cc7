# The example repository's shared library. The subslot is its soname's version: programs that
# link it depend on it with `:=` and are rebuilt when the soname changes.
EAPI=8

DESCRIPTION="A small greeting library, the example of a library with a subslot"
SRC_URI="https://distfiles.example.invalid/${P}.tar.gz"

LICENSE="GPL-2"
SLOT="0/1"
KEYWORDS="amd64 arm64 riscv"

src_compile() {
	emake CC="${CC:-${CHOST}-gcc}" CFLAGS="${CFLAGS}" LDFLAGS="${LDFLAGS}"
}

src_install() {
	emake DESTDIR="${D}" LIBDIR="$(get_libdir)" install
}
