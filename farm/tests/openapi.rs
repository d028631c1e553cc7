//! The API's contract: the OpenAPI document the server serves, generated from the code, is
//! the one committed in `openapi.json`. A change to the API shows in review as a change to that
//! file; `UPDATE_OPENAPI=1 cargo test -p autogentoo-farm --test openapi` rewrites it.

#[test]
fn the_served_openapi_document_is_the_committed_one() {
    let generated = autogentoo_farm::server::openapi_document()
        .to_pretty_json()
        .expect("the document serialises");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed.trim_end(),
        generated,
        "the API changed: review it, then run UPDATE_OPENAPI=1 cargo test -p autogentoo-farm \
         --test openapi"
    );
}
