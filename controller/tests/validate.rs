//! `ambit-controller validate`, run as a user runs it: on a folder mixing good and bad
//! manifests, on the shipped Bookinfo examples, and on standard input.

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

const BINARY: &str = env!("CARGO_BIN_EXE_ambit-controller");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/istio");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn validate(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BINARY)
        .arg("validate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ambit-controller");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for ambit-controller");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

const GOOD: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
      weight: 90
    - destination: {host: ratings, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

const BAD_WEIGHTS: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 40
";

const BAD_LOAD_BALANCER: &str = "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
  subsets: [{name: v1}, {name: v2}]
";

const BAD_REGEX_AND_SUBSET: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: shop}
spec:
  hosts: [details]
  http:
  - match:
    - uri: {regex: '^/details/(\\d+'}
    route:
    - destination: {host: ratings, subset: v9}
";

const NOT_YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   oops: 1\n";

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n";

#[test]
fn a_folder_of_good_and_bad_manifests_names_every_bad_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", GOOD);
    write(dir.path(), "reviews/routes.yaml", BAD_WEIGHTS);
    write(dir.path(), "reviews/rule.yml", BAD_LOAD_BALANCER);
    write(dir.path(), "details.yaml", BAD_REGEX_AND_SUBSET);
    write(dir.path(), "broken.yaml", NOT_YAML);
    write(dir.path(), "pod.yaml", POD);

    let run = validate(&["-f", dir.path().to_str().unwrap()], "");

    assert_eq!(
        run.code, 1,
        "exit code with errors\n{}{}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let expect = |object: &str, file: &str, path_and_reason: &str| {
        let wanted = format!("error: {object} in {}/{file}", dir.path().display());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&wanted) && l.ends_with(path_and_reason)),
            "expected a line starting {wanted:?} and ending {path_and_reason:?}, got:\n{}",
            run.stdout
        );
    };
    expect(
        "shop/reviews (VirtualService)",
        "reviews/routes.yaml document 1",
        ": spec.http[0].route: weights sum to 90, they must sum to 100",
    );
    expect(
        "shop/reviews (DestinationRule)",
        "reviews/rule.yml document 1",
        ": spec.trafficPolicy.loadBalancer.simple: unknown value `FASTEST`: use one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST",
    );
    expect(
        "shop/details (VirtualService)",
        "details.yaml document 1",
        ": spec.http[0].match[0].uri.regex: `^/details/(\\d+` is not a valid regular expression (RE2 syntax): unclosed group",
    );
    expect(
        "shop/details (VirtualService)",
        "details.yaml document 1",
        ": spec.http[0].route[0].destination.subset: no DestinationRule for ratings.shop.svc.cluster.local defines subset `v9` (defined: v1, v2): correct the name, or add the subset to the DestinationRule",
    );
    let broken = format!(
        "error: {}/broken.yaml document 1: not a Kubernetes object: ",
        dir.path().display()
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&broken)),
        "{}",
        run.stdout
    );

    assert!(
        !run.stdout.contains("ratings (") && !run.stdout.contains("good.yaml"),
        "good objects produce no diagnostic:\n{}",
        run.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some(
            "5 errors, 0 warnings: 2 of 5 Istio objects valid (1 object of other kinds not checked)"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.len(),
        6,
        "one line per problem and a summary:\n{}",
        run.stdout
    );
}

#[test]
fn the_bookinfo_examples_validate_clean() {
    let run = validate(&["-f", EXAMPLES], "");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "0 errors, 0 warnings: 12 of 12 Istio objects valid (1 object of other kinds not checked)\n"
    );
}

#[test]
fn standard_input_and_files_mix() {
    let reviews = fs::read_to_string(Path::new(EXAMPLES).join("reviews.yaml")).unwrap();
    let good = validate(&["-f", "-"], &reviews);
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    assert_eq!(
        good.stdout,
        "0 errors, 0 warnings: 2 of 2 Istio objects valid\n"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rule.yaml", BAD_LOAD_BALANCER);
    let file = dir.path().join("rule.yaml");
    let bad = validate(&["-f", "-", "-f", file.to_str().unwrap()], BAD_WEIGHTS);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(
        bad.stdout.contains("error: shop/reviews (VirtualService) in <stdin> document 1: spec.http[0].route: weights sum to 90"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout.contains("(DestinationRule) in "),
        "{}",
        bad.stdout
    );
}

#[test]
fn a_missing_file_is_an_error_line_not_a_crash() {
    let run = validate(&["-f", "/nonexistent/ambit/vs.yaml"], "");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("error: /nonexistent/ambit/vs.yaml: cannot be read: "),
        "{}",
        run.stdout
    );
}

#[test]
fn no_file_is_a_usage_error() {
    let run = validate(&[], "");
    assert_eq!(run.code, 2, "clap's usage exit code\n{}", run.stderr);
    assert!(run.stderr.contains("--filename"), "{}", run.stderr);
}
