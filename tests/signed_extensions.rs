//! Signed extensions, through the real binary: the trust store (`--trust-publisher`,
//! `--list-trusted-publishers`, `--untrust-publisher`), the refusals of `--verify-extensions`
//! (each naming its reason, nothing installed), and signed packages installed by the real
//! VS Code. Keys are made here, with `openssl` (RSA, P-256, Ed25519: the recipe the README
//! gives publishers) and with ring (an Ed25519 key stored as DER), and so are the packages and
//! their signatures, whose signed message is written out here as the README documents it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use testkit::{Home, Output, run};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl on PATH");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// A signing key of the tests, with its public half in a file.
struct Key {
    kind: Kind,
    /// `public.pem` (SPKI PEM) or, for ring's key, `public.der`.
    public: PathBuf,
    /// The DER SPKI, whose SHA-256 is the fingerprint.
    spki: Vec<u8>,
}

enum Kind {
    /// A private key in a PEM file, used through openssl.
    OpenSsl { private: PathBuf, algorithm: &'static str },
    /// An Ed25519 key of ring's.
    Ring(Ed25519KeyPair),
}

impl Key {
    /// `spec`: `rsa:BITS`, `p256`, `p384` or `ed25519`; `algorithm` is the signature file's.
    fn openssl(dir: &Path, name: &str, spec: &str, algorithm: &'static str) -> Key {
        std::fs::create_dir_all(dir).unwrap();
        let private = dir.join(format!("{name}.key"));
        let p = private.to_str().unwrap();
        let args: Vec<String> = match spec.split_once(':') {
            Some(("rsa", bits)) => ["-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}")]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => match spec {
                "p256" => vec!["-algorithm".into(), "EC".into(), "-pkeyopt".into(), "ec_paramgen_curve:P-256".into()],
                "p384" => vec!["-algorithm".into(), "EC".into(), "-pkeyopt".into(), "ec_paramgen_curve:P-384".into()],
                "ed25519" => vec!["-algorithm".into(), "ed25519".into()],
                other => panic!("unknown key spec {other}"),
            },
        };
        let mut all: Vec<&str> = vec!["genpkey"];
        all.extend(args.iter().map(String::as_str));
        all.extend(["-out", p]);
        openssl(&all);
        let public = dir.join(format!("{name}.pem"));
        openssl(&["pkey", "-in", p, "-pubout", "-out", public.to_str().unwrap()]);
        let spki = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        Key { kind: Kind::OpenSsl { private, algorithm }, public, spki }
    }

    /// An Ed25519 key from ring, its public key written as DER SPKI by hand (RFC 8410's header).
    fn ring(dir: &Path, file_name: &str) -> Key {
        std::fs::create_dir_all(dir).unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(pair.public_key().as_ref());
        let public = dir.join(file_name);
        std::fs::write(&public, &spki).unwrap();
        Key { kind: Kind::Ring(pair), public, spki }
    }

    fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&sha256(&self.spki)))
    }

    fn algorithm(&self) -> &'static str {
        match &self.kind {
            Kind::OpenSsl { algorithm, .. } => algorithm,
            Kind::Ring(_) => "ed25519",
        }
    }

    /// The signature of `message`, as the README tells publishers to make it.
    fn sign(&self, message: &[u8], scratch: &Path) -> Vec<u8> {
        match &self.kind {
            Kind::Ring(pair) => pair.sign(message).as_ref().to_vec(),
            Kind::OpenSsl { private, algorithm } => {
                let msg = scratch.join("message");
                std::fs::write(&msg, message).unwrap();
                let (k, m) = (private.to_str().unwrap(), msg.to_str().unwrap());
                match *algorithm {
                    "ed25519" => openssl(&["pkeyutl", "-sign", "-inkey", k, "-rawin", "-in", m]),
                    "rsa-pss-sha256" => openssl(&[
                        "dgst",
                        "-sha256",
                        "-sign",
                        k,
                        "-sigopt",
                        "rsa_padding_mode:pss",
                        "-sigopt",
                        "rsa_pss_saltlen:digest",
                        m,
                    ]),
                    // rsa-pkcs1-sha256 and ecdsa-p256-sha256
                    _ => openssl(&["dgst", "-sha256", "-sign", k, m]),
                }
            }
        }
    }
}

/// A package made by `tests/fixtures/make_vsix.py`.
fn make_vsix(dir: &Path, file: &str, publisher: &str, name: &str, version: &str, description: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(file);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_vsix.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(&out)
        .args([publisher, name, version, description])
        .status()
        .expect("python3");
    assert!(status.success());
    out
}

/// What is signed, written out as the README documents it.
fn message(publisher: &str, extension: &str, version: &str, digest: &str) -> Vec<u8> {
    format!(
        "code-server-extension-signature/1\npublisher={publisher}\nextension={extension}\nversion={version}\nsha256={digest}\n"
    )
    .into_bytes()
}

/// Writes `<vsix>.sig` claiming `extension@version` of `publisher`, signed by `key` over the
/// package's real digest.
fn sign(vsix: &Path, key: &Key, publisher: &str, extension: &str, version: &str) {
    let digest = hex(&sha256(&std::fs::read(vsix).unwrap()));
    let sig = key.sign(&message(publisher, extension, version, &digest), vsix.parent().unwrap());
    write_sig(vsix, publisher, extension, version, &digest, key.algorithm(), &sig);
}

fn write_sig(vsix: &Path, publisher: &str, extension: &str, version: &str, digest: &str, alg: &str, sig: &[u8]) {
    let json = serde_json::json!({
        "format": "code-server-extension-signature/1",
        "publisher": publisher,
        "extension": extension,
        "version": version,
        "sha256": digest,
        "algorithm": alg,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig),
    });
    std::fs::write(format!("{}.sig", vsix.display()), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

fn trust(home: &Home, key: &Key, publisher: Option<&str>) -> Output {
    let mut args = vec!["--trust-publisher", key.public.to_str().unwrap()];
    if let Some(p) = publisher {
        args.extend(["--publisher", p]);
    }
    let out = run(home, &args, &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn installed(home: &Home) -> Vec<String> {
    match home.data_dir().join("extensions").read_dir() {
        Err(_) => vec![],
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n != "extensions.json")
                .collect();
            names.sort();
            names
        }
    }
}

/// Staged copies of verified packages never outlive the run.
fn assert_nothing_staged(home: &Home) {
    let runtime = home.path().join("run/code-server");
    if let Ok(entries) = runtime.read_dir() {
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with("verified-extensions"), "{name} was left in {}", runtime.display());
        }
    }
}

#[test]
fn trust_store_actions() {
    let home = Home::new();
    home.write_config("auth: none\n");
    let keys = home.path().join("keys");

    let out = run(&home, &["--list-trusted-publishers"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("No trusted publishers"), "{}", out.stdout);

    // The publisher from the file name: acme.pem is acme's.
    let rsa = Key::openssl(&keys, "acme", "rsa:2048", "rsa-pkcs1-sha256");
    let out = trust(&home, &rsa, None);
    assert_eq!(out.stdout.trim(), format!("Trusted: publisher acme, rsa-2048 key {}", rsa.fingerprint()));
    let out = trust(&home, &rsa, None);
    assert_eq!(out.stdout.trim(), format!("Already trusted: publisher acme, rsa-2048 key {}", rsa.fingerprint()));
    // A second key for acme (key rotation), and a DER key named by --publisher (case folded).
    let p256 = Key::openssl(&keys, "second", "p256", "ecdsa-p256-sha256");
    trust(&home, &p256, Some("acme"));
    let ed = Key::ring(&keys, "whatever.der");
    let out = trust(&home, &ed, Some("Globex"));
    assert!(out.stdout.contains("publisher globex, ed25519 key"), "{}", out.stdout);

    let out = run(&home, &["--list-trusted-publishers"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        vec![
            vec!["PUBLISHER", "ALGORITHM", "FINGERPRINT"],
            vec!["acme", "rsa-2048", rsa.fingerprint().as_str()],
            vec!["acme", "ecdsa-p256", p256.fingerprint().as_str()],
            vec!["globex", "ed25519", ed.fingerprint().as_str()],
        ],
        "{}",
        out.stdout
    );

    // The store is private, and holds PEM that openssl reads back to the same key.
    let store = home.data_dir().join("trusted-publishers");
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("acme.pem")), 0o600);
    assert_eq!(mode(&store.join("globex.pem")), 0o600);
    let der = openssl(&["pkey", "-pubin", "-in", store.join("globex.pem").to_str().unwrap(), "-outform", "DER"]);
    assert_eq!(der, ed.spki);

    // Keys that are refused, each with its reason; nothing is added.
    let refused = |args: &[&str], says: &str| {
        let out = run(&home, args, &[]);
        assert_eq!(out.code, Some(1), "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(says), "{args:?} should say {says:?}: {}", out.stderr);
    };
    let small = Key::openssl(&keys, "small", "rsa:1024", "rsa-pkcs1-sha256");
    refused(&["--trust-publisher", small.public.to_str().unwrap()], "its RSA key has 1024 bits: 2048 to 4096");
    let p384 = Key::openssl(&keys, "p384", "p384", "ecdsa-p256-sha256");
    refused(&["--trust-publisher", p384.public.to_str().unwrap()], "ECDSA on curve 1.3.132.0.34");
    let private = keys.join("small.key");
    refused(&["--trust-publisher", private.to_str().unwrap(), "--publisher", "acme"], "not a public key");
    let garbage = keys.join("junk.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    refused(&["--trust-publisher", garbage.to_str().unwrap()], "neither a PEM PUBLIC KEY nor a DER");
    let dotted = keys.join(".hidden.pem");
    std::fs::copy(&rsa.public, &dotted).unwrap();
    refused(&["--trust-publisher", dotted.to_str().unwrap()], "cannot tell the publisher from the file name");
    refused(&["--trust-publisher", rsa.public.to_str().unwrap(), "--publisher", "../evil"], "is not a publisher name");
    refused(&["--trust-publisher", keys.join("missing.pem").to_str().unwrap()], "No such file");
    refused(&["--publisher", "acme"], "--publisher goes with --trust-publisher");
    refused(
        &["--trust-publisher", rsa.public.to_str().unwrap(), "--list-trusted-publishers"],
        "cannot be used together",
    );
    refused(
        &["--trust-publisher", rsa.public.to_str().unwrap(), "--install-extension", "x.vsix"],
        "run them one after the other",
    );
    let names: Vec<_> = store.read_dir().unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Trust actions are for the command line only.
    home.write_config("auth: none\nlist-trusted-publishers: true\n");
    refused(&["--list-extensions"], "can only be given on the command line");
    home.write_config("auth: none\n");

    let out = run(&home, &["--untrust-publisher", "GLOBEX"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "No longer trusting publisher globex (1 key removed)");
    refused(&["--untrust-publisher", "globex"], "publisher globex is not trusted");
    let out = run(&home, &["--list-trusted-publishers"], &[]);
    assert!(!out.stdout.contains("globex"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
}

/// A home where acme's Ed25519 key is trusted, with the keys and a scratch directory.
struct Setup {
    home: Home,
    acme: Key,
    dir: PathBuf,
}

fn setup(home: Home) -> Setup {
    home.write_config("auth: none\n");
    let dir = home.path().join("work");
    let acme = Key::openssl(&dir, "acme", "ed25519", "ed25519");
    trust(&home, &acme, None);
    Setup { home, acme, dir }
}

/// `--verify-extensions --install-extension ARG...` on the stand-in VS Code: every refusal is
/// reported before VS Code is run at all.
fn verify(s: &Setup, args: &[&Path]) -> Output {
    let mut all = vec!["--verify-extensions"];
    for a in args {
        all.extend(["--install-extension", a.to_str().unwrap()]);
    }
    run(&s.home, &all, &[])
}

fn assert_refused(out: &Output, says: &str) {
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(says), "should say {says:?}:\n{}", out.stderr);
    assert!(out.stderr.contains("Nothing was installed"), "{}", out.stderr);
    // The stand-in says this when run as the extension CLI: VS Code was never started.
    assert!(!out.stderr.contains("fake-vscode"), "VS Code ran: {}", out.stderr);
}

#[test]
fn enforcing_mode_refuses_and_says_why() {
    let s = setup(Home::new());
    let d = &s.dir;

    // A well signed package passes and goes on to VS Code (the stand-in, which has no CLI and
    // says so): the refusals below are the checks, not something else.
    let good = make_vsix(d, "good.vsix", "acme", "hello", "1.0.0", "good");
    sign(&good, &s.acme, "acme", "acme.hello", "1.0.0");
    let out = verify(&s, &[&good]);
    assert!(out.stdout.contains("Verified acme.hello@1.0.0: signed by publisher acme (ed25519 key"), "{}", out.stdout);
    assert!(out.stderr.contains("fake-vscode: only runs as a server"), "{}", out.stderr);
    assert_nothing_staged(&s.home);

    let out = run(&s.home, &["--verify-extensions", "--install-extension", "acme.hello"], &[]);
    assert_refused(&out, "acme.hello names an extension of the marketplace, which cannot be verified");

    let unsigned = make_vsix(d, "unsigned.vsix", "acme", "unsigned", "1.0.0", "x");
    assert_refused(&verify(&s, &[&unsigned]), "unsigned.vsix: it is not signed (there is no");

    let initech = Key::openssl(d, "initech", "ed25519", "ed25519");
    let theirs = make_vsix(d, "theirs.vsix", "initech", "tool", "1.0.0", "x");
    sign(&theirs, &initech, "initech", "initech.tool", "1.0.0");
    assert_refused(&verify(&s, &[&theirs]), "publisher initech is not trusted");

    // acme's name on the package, someone else's key on the signature.
    let forged = make_vsix(d, "forged.vsix", "acme", "forged", "1.0.0", "x");
    sign(&forged, &initech, "acme", "acme.forged", "1.0.0");
    assert_refused(
        &verify(&s, &[&forged]),
        "bad signature: no trusted key of publisher acme verifies its ed25519 signature",
    );
    // A signature of a kind acme has no key of.
    let p256 = Key::openssl(d, "p256", "p256", "ecdsa-p256-sha256");
    let other_kind = make_vsix(d, "kind.vsix", "acme", "kind", "1.0.0", "x");
    sign(&other_kind, &p256, "acme", "acme.kind", "1.0.0");
    assert_refused(&verify(&s, &[&other_kind]), "(none of its trusted keys is of that kind)");

    // Signed, then replaced by a package of the same name and version.
    let changed = make_vsix(d, "changed.vsix", "acme", "changed", "1.0.0", "the signed one");
    sign(&changed, &s.acme, "acme", "acme.changed", "1.0.0");
    make_vsix(d, "changed.vsix", "acme", "changed", "1.0.0", "a changed one");
    assert_refused(&verify(&s, &[&changed]), "digest mismatch: the package was changed after it was signed");

    // A good signature (acme's key, this package's digest) for another version or another
    // extension does not cover this package.
    let v2 = make_vsix(d, "v2.vsix", "acme", "hello", "2.0.0", "x");
    sign(&v2, &s.acme, "acme", "acme.hello", "1.0.0");
    assert_refused(
        &verify(&s, &[&v2]),
        "extension id mismatch: the signature is for acme.hello@1.0.0, but the package is acme.hello@2.0.0",
    );
    let renamed = make_vsix(d, "renamed.vsix", "acme", "other", "1.0.0", "x");
    sign(&renamed, &s.acme, "acme", "acme.hello", "1.0.0");
    assert_refused(
        &verify(&s, &[&renamed]),
        "the signature is for acme.hello@1.0.0, but the package is acme.other@1.0.0",
    );

    // The signed fields edited after signing: the signature no longer matches them.
    let edited = make_vsix(d, "edited.vsix", "acme", "edited", "1.0.1", "x");
    let digest = hex(&sha256(&std::fs::read(&edited).unwrap()));
    let sig = s.acme.sign(&message("acme", "acme.edited", "1.0.0", &digest), d);
    write_sig(&edited, "acme", "acme.edited", "1.0.1", &digest, "ed25519", &sig);
    assert_refused(&verify(&s, &[&edited]), "bad signature");

    let malformed = make_vsix(d, "malformed.vsix", "acme", "malformed", "1.0.0", "x");
    std::fs::write(d.join("malformed.vsix.sig"), "{}").unwrap();
    assert_refused(&verify(&s, &[&malformed]), "its signature");
    assert_refused(&verify(&s, &[&malformed]), "is malformed");

    let not_zip = d.join("notzip.vsix");
    std::fs::write(&not_zip, "not a zip").unwrap();
    assert_refused(&verify(&s, &[&not_zip]), "it is not a VS Code extension package: it is not a zip archive");

    // One refusal among good packages: every refusal is reported, and nothing goes to VS Code.
    let out = verify(&s, &[&good, &unsigned, &theirs]);
    assert_refused(&out, "unsigned.vsix: it is not signed");
    assert!(out.stderr.contains("publisher initech is not trusted"), "{}", out.stderr);

    // Enforcement from the config file or the environment; the command line cannot undo it.
    let install_id = ["--install-extension", "acme.hello"];
    let marketplace = "names an extension of the marketplace";
    s.home.write_config("auth: none\nverify-extensions: true\n");
    assert_refused(&run(&s.home, &install_id, &[]), marketplace);
    assert_refused(&run(&s.home, &["--verify-extensions=false", install_id[0], install_id[1]], &[]), marketplace);
    s.home.write_config("auth: none\n");
    assert_refused(&run(&s.home, &install_id, &[("CODE_SERVER_VERIFY_EXTENSIONS", "1")]), marketplace);

    // Not enforcing: no check at all, the marketplace id and the unsigned package go to VS Code.
    let out =
        run(&s.home, &["--install-extension", "acme.hello", "--install-extension", unsigned.to_str().unwrap()], &[]);
    assert!(out.stderr.contains("fake-vscode: only runs as a server"), "{}", out.stderr);
    assert!(!out.stderr.contains("refusing"), "{}", out.stderr);
    assert_nothing_staged(&s.home);
}

/// The real VS Code installs signed packages of every accepted kind of key, and nothing when
/// one package of the run is refused.
#[test]
fn signed_packages_install_in_real_vscode() {
    let s = setup(Home::with_vscode());
    let d = &s.dir;
    let p256 = Key::openssl(d, "p256", "p256", "ecdsa-p256-sha256");
    trust(&s.home, &p256, Some("acme"));
    let rsa = Key::openssl(d, "globex", "rsa:2048", "rsa-pkcs1-sha256");
    trust(&s.home, &rsa, None);
    let pss = Key::openssl(d, "pss", "rsa:4096", "rsa-pss-sha256");
    trust(&s.home, &pss, Some("globex"));
    let ring_key = Key::ring(d, "initech.der");
    trust(&s.home, &ring_key, None);

    let packages = [
        ("acme", "ed", &s.acme),
        ("acme", "ecdsa", &p256),
        ("globex", "pkcs", &rsa),
        ("globex", "pss", &pss),
        ("initech", "ring", &ring_key),
    ];
    let mut vsix = vec![];
    for (publisher, name, key) in packages {
        let p = make_vsix(d, &format!("{name}.vsix"), publisher, name, "1.2.3", "signed");
        sign(&p, key, publisher, &format!("{publisher}.{name}"), "1.2.3");
        vsix.push(p);
    }
    let unsigned = make_vsix(d, "unsigned.vsix", "acme", "unsigned", "1.0.0", "x");

    let mut mixed: Vec<&Path> = vsix.iter().map(PathBuf::as_path).collect();
    mixed.push(&unsigned);
    let out = verify(&s, &mixed);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("unsigned.vsix: it is not signed"), "{}", out.stderr);
    assert_eq!(installed(&s.home), Vec::<String>::new(), "a refused run installs nothing");

    let all: Vec<&Path> = vsix.iter().map(PathBuf::as_path).collect();
    let out = verify(&s, &all);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for (publisher, name, key) in packages {
        let line = format!("Verified {publisher}.{name}@1.2.3: signed by publisher {publisher} ({}", key.algorithm());
        let line = line.replace("rsa-pkcs1-sha256", "rsa-2048").replace("rsa-pss-sha256", "rsa-4096");
        let line = line.replace("ecdsa-p256-sha256", "ecdsa-p256");
        assert!(out.stdout.contains(&line), "{line}:\n{}", out.stdout);
    }
    assert_nothing_staged(&s.home);
    let out = run(&s.home, &["--list-extensions", "--show-versions"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut listed: Vec<&str> = out.stdout.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        ["acme.ecdsa@1.2.3", "acme.ed@1.2.3", "globex.pkcs@1.2.3", "globex.pss@1.2.3", "initech.ring@1.2.3"]
    );

    // Not enforcing, an unsigned package installs as it always did.
    let out = run(&s.home, &["--install-extension", unsigned.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(installed(&s.home).iter().any(|n| n.starts_with("acme.unsigned-1.0.0")), "{:?}", installed(&s.home));
}
