//! The captured tables: their names and keys, and their creation with the
//! rows the snapshot starts from.

use integration_tests::TestDb;

use crate::plan::Plan;

/// The captured tables: SQL name, `schema.table` as events name it, key.
pub(crate) const TABLES: [(&str, &str, &[&str]); 3] = [
    ("public.t_plain", "public.t_plain", &["id"]),
    ("public.t_toast", "public.t_toast", &["id"]),
    ("public.t_comp", "public.t_comp", &["a", "b"]),
];

/// Creates the tables (and the `public.chain` function that makes TOASTed
/// values) in `db`, filled with the rows of `plan`.
pub(crate) async fn create(db: &TestDb, plan: &Plan) {
    let toast_identity = if plan.toast_identity_full {
        "FULL"
    } else {
        "DEFAULT"
    };
    let comp_identity = if plan.comp_identity_full {
        "FULL"
    } else {
        "DEFAULT"
    };
    db.exec(&format!(
        "CREATE FUNCTION public.chain(tag text, n int) RETURNS text LANGUAGE sql \
           AS $$ SELECT string_agg(md5(tag || g), '') FROM generate_series(1, n) g $$;\
         CREATE TABLE public.t_plain (id bigint PRIMARY KEY, n int NOT NULL, s text, b bool);\
         INSERT INTO public.t_plain SELECT g, g % 1000, md5('p' || g), g % 2 = 0 \
           FROM generate_series(1, {rows_plain}) g;\
         CREATE TABLE public.t_toast (id int PRIMARY KEY, n int NOT NULL, doc text, doc2 text);\
         ALTER TABLE public.t_toast ALTER COLUMN doc SET STORAGE EXTERNAL;\
         ALTER TABLE public.t_toast REPLICA IDENTITY {toast_identity};\
         INSERT INTO public.t_toast SELECT g, 0, public.chain('d' || g, 70 + g % 60), \
           CASE WHEN g % 3 = 0 THEN NULL ELSE public.chain('e' || g, 70) END \
           FROM generate_series(1, {rows_toast}) g;\
         CREATE TABLE public.t_comp (a int, b text, v int, note text, PRIMARY KEY (a, b));\
         ALTER TABLE public.t_comp REPLICA IDENTITY {comp_identity};\
         INSERT INTO public.t_comp SELECT g, k, g, 'n' || g \
           FROM generate_series(1, {rows_comp}) g, (VALUES ('k1'), ('k2')) AS x(k);\
         ANALYZE",
        rows_plain = plan.rows_plain,
        rows_toast = plan.rows_toast,
        rows_comp = plan.rows_comp / 2,
    ))
    .await;
}
