//! Not a plugin: a library whose constructor runs the moment it is dlopened, before any check a
//! loader can make of its contents, and creates the file `AUTOGENTOO_TEST_CONSTRUCTOR_MARK`
//! names. A test puts it where a plugin loader looks and sees from the mark whether the loader
//! opened it. This is why a plugin's file and directory must be writable by root alone: code
//! like this runs with autogentoo's privileges.

/// The constructor, in `.init_array` as C's `__attribute__((constructor))` puts it.
#[used]
#[link_section = ".init_array"]
static MARK_ON_LOAD: extern "C" fn() = mark;

extern "C" fn mark() {
    if let Some(path) = std::env::var_os("AUTOGENTOO_TEST_CONSTRUCTOR_MARK") {
        let _ = std::fs::write(path, "the constructor ran\n");
    }
}
