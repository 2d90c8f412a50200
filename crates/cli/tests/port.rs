//! `port` with real containers and published ports, in docker's output form.

mod common;

use common::{daemon_with_busybox, require_tools, run};

#[test]
fn port_lists_published_ports_as_docker_does() {
    if !require_tools(&["/usr/lib/cni/bridge"]) {
        return;
    }
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "-p",
        "8081:80",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5353:53/udp",
        &image,
        "sleep",
        "300",
    ]);
    assert_eq!(
        d.ok(&["port", "pub"]),
        "53/udp -> 127.0.0.1:5353\n80/tcp -> 0.0.0.0:8080\n80/tcp -> 0.0.0.0:8081\n"
    );
    assert_eq!(d.ok(&["port", "pub", "80"]), "0.0.0.0:8080\n0.0.0.0:8081\n");
    assert_eq!(
        d.ok(&["port", "pub", "80/tcp"]),
        "0.0.0.0:8080\n0.0.0.0:8081\n"
    );
    assert_eq!(d.ok(&["port", "pub", "53/udp"]), "127.0.0.1:5353\n");

    // A port not published, a bad port, no such container: exit 1, a message naming it.
    let (code, out, err) = run(&d, &["port", "pub", "53"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("no public port '53/tcp' published for pub"),
        "{err}"
    );
    let (code, _, err) = run(&d, &["port", "pub", "80/sctp"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sctp"), "{err}");
    let (code, _, err) = run(&d, &["port", "pub", "http"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"http\""), "{err}");
    let (code, _, err) = run(&d, &["port", "ghost"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ghost"), "{err}");

    // No published ports, or not running: nothing, and success.
    d.ok(&["run", "-d", "--name", "plain", &image, "sleep", "300"]);
    assert_eq!(d.ok(&["port", "plain"]), "");
    d.ok(&["stop", "-t", "0", "pub"]);
    assert_eq!(d.ok(&["port", "pub"]), "");
}
