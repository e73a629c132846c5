//! The NATS sink's `auth.credentials_file` (a `.creds` file: user JWT and
//! nkey seed) against a nats-server of the test's own in operator (JWT)
//! mode, started from `CDC_TEST_NATS_SERVER_BIN`.
//!
//! The test makes its own operator, accounts and users with `nkeys` and
//! signs their JWTs itself (header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! v2 claims), so no `nsc` is needed. The server trusts the operator and
//! knows the accounts through `resolver: MEMORY` with `resolver_preload`.
//! JetStream in operator mode needs a system account (the server refuses to
//! start JetStream without one) and an account JWT whose limits enable
//! JetStream.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use integration_tests::http::free_port;
use integration_tests::nats::{server_bin, stream_messages};
use integration_tests::pipelines::Pipeline;
use integration_tests::{unique_suffix, wait_streaming, wait_until, Engine, TempDir, TestDb};
use nkeys::KeyPair;
use serde_json::{json, Value as Json};

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A signed NATS JWT (v2) about `subject`, issued by `issuer`; `nats` is
/// the type-specific part of the claims (`type` and `version` are added).
fn sign_jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Json) -> String {
    sign_jwt_as(&issuer.public_key(), issuer, subject, name, nats)
}

/// [`sign_jwt`] naming `issuer` as the issuer but signing with `signer`.
fn sign_jwt_as(
    issuer: &str,
    signer: &KeyPair,
    subject: &str,
    name: &str,
    mut nats: Json,
) -> String {
    nats["type"] = json!(match subject.as_bytes().first() {
        Some(b'O') => "operator",
        Some(b'A') => "account",
        Some(b'U') => "user",
        _ => panic!("unexpected subject key {subject}"),
    });
    nats["version"] = json!(2);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "jti": format!("it-{}", unique_suffix()),
        "iat": now,
        "iss": issuer,
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{body}");
    let signature = signer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An account JWT with no limits, JetStream included.
fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str) -> String {
    let limits = json!({
        "subs": -1, "data": -1, "payload": -1,
        "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    sign_jwt(
        operator,
        &account.public_key(),
        name,
        json!({ "limits": limits }),
    )
}

/// The text of a `.creds` file for `user`, its JWT issued by `account`.
fn creds(account: &KeyPair, user: &KeyPair) -> String {
    creds_signed_by(&account.public_key(), account, user)
}

/// The text of a `.creds` file for `user` whose JWT names `issuer` but is
/// signed by `signer`.
fn creds_signed_by(issuer: &str, signer: &KeyPair, user: &KeyPair) -> String {
    let jwt = sign_jwt_as(
        issuer,
        signer,
        &user.public_key(),
        "it-user",
        json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().expect("seed")
    )
}

/// A nats-server in operator mode with JetStream, on a free port of
/// 127.0.0.1; killed on drop.
struct OperatorServer {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl OperatorServer {
    /// Trusts `operator`; knows `account` and the system account `system`.
    fn start(operator: &KeyPair, system: &KeyPair, account: &KeyPair) -> OperatorServer {
        let (bin, port) = (server_bin(), free_port());
        let dir = TempDir::new("nats_creds_server");
        let operator_jwt = sign_jwt(
            operator,
            &operator.public_key(),
            "it-operator",
            json!({ "system_account": system.public_key() }),
        );
        let system_jwt = sign_jwt(operator, &system.public_key(), "SYS", json!({}));
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             operator: {operator_jwt}\n\
             system_account: {sys}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {acc}: {account_jwt}\n}}\n\
             jetstream {{ store_dir: {store} }}\n",
            sys = system.public_key(),
            acc = account.public_key(),
            account_jwt = account_jwt(operator, account, "it-account"),
            store = json_str(&dir.join("js").display().to_string()),
        );
        let conf_path = dir.join("server.conf");
        std::fs::write(&conf_path, conf).expect("server config");
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        OperatorServer { port, dir, child }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A JetStream context of a client connected with `creds_file`, once
    /// the server accepts it and JetStream answers.
    async fn jetstream(&self, creds_file: &Path) -> jetstream::Context {
        let url = self.url();
        let mut js = None;
        wait_until(Duration::from_secs(20), async || {
            let Ok(options) = async_nats::ConnectOptions::with_credentials_file(creds_file).await
            else {
                return false;
            };
            let Ok(client) = options.connect(&url).await else {
                return false;
            };
            let ctx = jetstream::new(client);
            if ctx.query_account().await.is_err() {
                return false;
            }
            js = Some(ctx);
            true
        })
        .await;
        js.unwrap_or_else(|| panic!("own nats-server on {url} not ready\n{}", self.log()))
    }
}

impl Drop for OperatorServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write creds file");
    path
}

/// Credentials-file authentication against a nats-server in operator (JWT)
/// mode: a `.creds` file of a user of an account the server does not know,
/// and one whose JWT names the trusted account but is signed by another
/// key, both stop the engine at start with `cannot connect to NATS at
/// <url>` and without the seed in the log; the `.creds` file of a user of
/// the trusted account publishes (stream created, one row → one message
/// whose `after` is the row's `to_jsonb`) and the engine stops cleanly on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_auth() {
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let server = OperatorServer::start(&operator, &system, &account);

    let files = TempDir::new("nats_creds_files");
    let good = write_file(&files, "user.creds", &creds(&account, &user));
    // A user of an account the server does not know (as of another operator).
    let foreign_account = KeyPair::new_account();
    let foreign_user = KeyPair::new_user();
    let foreign = write_file(
        &files,
        "foreign.creds",
        &creds(&foreign_account, &foreign_user),
    );
    // A JWT claiming the trusted account as issuer, signed by another key.
    let forger = KeyPair::new_account();
    let forged_user = KeyPair::new_user();
    let forged = write_file(
        &files,
        "forged.creds",
        &creds_signed_by(&account.public_key(), &forger, &forged_user),
    );

    let js = server.jetstream(&good).await;

    let db = TestDb::create("nats_creds").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text)")
        .await;
    let s = unique_suffix();
    let stream = format!("IT_{s}");
    let yaml = |creds_file: &Path| {
        let (publication, slot) = (format!("p_{s}"), format!("s_{s}"));
        Pipeline::streaming(
            &format!("it_{s}"),
            db.url(),
            "public.t",
            &publication,
            &slot,
            200,
        )
        .sink(&format!(
            "type: nats\nurl: {url}\nsubject: \"it_{s}.{{table}}\"\n\
                 auth: {{ credentials_file: {path} }}\n\
                 stream: {{ name: {stream}, create: true, storage: memory }}",
            url = json_str(&server.url()),
            path = json_str(&creds_file.display().to_string()),
        ))
        .yaml()
    };

    for (bad, seed) in [
        (&foreign, foreign_user.seed().unwrap()),
        (&forged, forged_user.seed().unwrap()),
    ] {
        let mut engine = Engine::start(&yaml(bad));
        let code = engine.wait_exit(Duration::from_secs(90)).await;
        assert_ne!(
            code,
            0,
            "{} was accepted\n{}",
            bad.display(),
            engine.output_report()
        );
        let stderr = engine.stderr_text();
        assert!(
            stderr.contains(&format!("cannot connect to NATS at {}", server.url())),
            "{}\n{}",
            bad.display(),
            engine.output_report()
        );
        assert!(
            !stderr.contains(&seed),
            "the seed of {} appears in the log",
            bad.display()
        );
    }
    assert!(
        js.get_stream(&stream).await.is_err(),
        "a rejected engine created the stream"
    );

    let mut engine = Engine::start(&yaml(&good));
    let slot = format!("s_{s}");
    wait_streaming(&db, &mut engine, &slot, Duration::from_secs(90)).await;
    db.exec("INSERT INTO public.t VALUES (1, 42, 'creds \"ok\"')")
        .await;
    let one = wait_until(Duration::from_secs(90), async || {
        stream_messages(&js, &stream).await.is_some_and(|n| n >= 1)
    })
    .await;
    assert!(one, "no message in {stream}\n{}", engine.output_report());
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    assert!(
        !engine.stderr_text().contains(&user.seed().unwrap()),
        "the seed appears in the log"
    );

    let mut st = js.get_stream(&stream).await.expect("stream");
    let info = st.info().await.expect("stream info");
    assert_eq!(info.state.messages, 1, "{}", engine.output_report());
    let message = st.get_raw_message(1).await.expect("message 1");
    assert_eq!(message.subject.to_string(), format!("it_{s}.t"));
    let body: Json = serde_json::from_slice(&message.payload).expect("JSON body");
    let rows = db.to_jsonb_rows("public.t", "id").await;
    assert_eq!(body["op"], "c", "{body}");
    assert_eq!(body["after"], rows["1"], "{body}");

    db.cleanup().await;
}
