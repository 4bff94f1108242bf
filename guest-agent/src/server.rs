//! The agent's protocol server: accepts host connections on vsock, checks
//! the version handshake, and dispatches requests. Requests that open
//! streams (exec, copy-in, copy-out) are handled on the connection's
//! reader thread so their streams exist before the host's data arrives;
//! requests that block (wait, create, shutdown) get a thread each.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use cocoon_proto::{
    negotiate_version, read_frame, ErrorBody, ErrorCode, Frame, Hello, Request, Response,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::conn::{spawn_named, Conn};
use crate::container::{self, ExecStreams};
use crate::sys;

/// The vsock port the agent listens on.
pub const PORT: u32 = 1024;

/// Accepts connections forever on a thread of its own.
pub fn start() {
    let listener = match sys::vsock_listen(PORT) {
        Ok(l) => l,
        Err(e) => {
            crate::log(&format!("cannot listen on vsock port {PORT}: {e}"));
            return;
        }
    };
    spawn_named("accept", move || loop {
        match sys::accept(&listener) {
            Ok(fd) => {
                let sock = File::from(fd);
                spawn_named("conn", move || serve(sock));
            }
            Err(e) => {
                crate::log(&format!("accept: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    });
}

fn serve(sock: File) {
    let Ok(writer) = sock.try_clone() else { return };
    let conn = Conn::new(writer);
    let mut reader = BufReader::with_capacity(128 * 1024, sock);
    match read_frame(&mut reader) {
        Ok(Some(Frame::Hello(h))) => {
            match negotiate_version(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, &h) {
                Ok(v) => {
                    let mut mine =
                        Hello::new(Some(format!("cocoon-agent {}", env!("CARGO_PKG_VERSION"))));
                    mine.version = v;
                    if !conn.send(&Frame::Hello(mine)) {
                        return;
                    }
                }
                Err(e) => {
                    conn.send(&Frame::Error(e));
                    return;
                }
            }
        }
        Ok(_) => {
            conn.send(&Frame::Error(ErrorBody::new(
                ErrorCode::Protocol,
                "the first frame must be Hello",
            )));
            return;
        }
        Err(_) => return,
    }
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                conn.send(&Frame::Error(ErrorBody::new(
                    ErrorCode::Protocol,
                    e.to_string(),
                )));
                break;
            }
        };
        match frame {
            Frame::Request { id, request } => dispatch(&conn, id, request),
            f @ (Frame::Data { .. } | Frame::Close { .. } | Frame::Credit { .. }) => {
                if !conn.on_stream_frame(f) {
                    conn.send(&Frame::Error(ErrorBody::new(
                        ErrorCode::Protocol,
                        "stream flow control violated",
                    )));
                    break;
                }
            }
            _ => {
                conn.send(&Frame::Error(ErrorBody::new(
                    ErrorCode::Protocol,
                    "unexpected frame from the host",
                )));
                break;
            }
        }
    }
    conn.mark_dead();
}

fn done(r: Result<(), ErrorBody>) -> Result<Response, ErrorBody> {
    r.map(|()| Response::Done)
}

fn dispatch(conn: &Arc<Conn>, id: u32, request: Request) {
    match request {
        Request::Exec {
            container_id,
            exec_id,
            process,
            stdin,
            stdout,
            stderr,
            keep_output,
        } => {
            let r = container::get(&container_id).and_then(|c| {
                c.exec(
                    conn,
                    &exec_id,
                    &process,
                    ExecStreams {
                        stdin,
                        stdout,
                        stderr,
                        keep_output,
                    },
                )
            });
            if r.is_err() {
                // Streams the host opened for a failed exec: end them.
                for s in [stdin, stdout, stderr].into_iter().flatten() {
                    if !conn.stream_in_use(s) {
                        conn.send(&Frame::Close { stream: s });
                    }
                }
            }
            conn.respond(id, r.map(|pid| Response::Started { pid }));
        }
        Request::CopyIn {
            container_id,
            path,
            stream,
            tar,
            mode,
        } => crate::files::copy_in(conn, id, &container_id, &path, stream, tar, mode),
        Request::CopyOut {
            container_id,
            path,
            stream,
            tar,
        } => crate::files::copy_out(conn, id, &container_id, &path, stream, tar),
        Request::ResizeTty {
            container_id,
            exec_id,
            rows,
            cols,
        } => conn.respond(
            id,
            done(container::get(&container_id).and_then(|c| c.resize(&exec_id, rows, cols))),
        ),
        Request::Signal {
            container_id,
            exec_id,
            signal,
        } => conn.respond(
            id,
            done(container::get(&container_id).and_then(|c| c.signal(&exec_id, signal))),
        ),
        Request::Attach {
            container_id,
            exec_id,
            stdout,
            stderr,
            stdout_from,
            stderr_from,
        } => conn.respond(
            id,
            done(container::get(&container_id).and_then(|c| {
                c.attach(
                    conn,
                    &exec_id,
                    [(stdout, stdout_from), (stderr, stderr_from)],
                )
            })),
        ),
        Request::Stat { container_id, path } => conn.respond(
            id,
            crate::files::stat(&container_id, &path).map(Response::PathInfo),
        ),
        Request::Stats { container_id } => conn.respond(
            id,
            container::get(&container_id)
                .and_then(|c| c.stats())
                .map(Response::Stats),
        ),
        Request::Wait {
            container_id,
            exec_id,
        } => {
            let conn = conn.clone();
            spawn_named("wait", move || {
                let r = container::get(&container_id).and_then(|c| c.wait(&exec_id));
                conn.respond(id, r.map(Response::Exited));
            });
        }
        Request::CreateContainer {
            container_id,
            rootfs,
            hostname,
            hosts,
            resolv_conf,
        } => {
            let conn = conn.clone();
            spawn_named("create", move || {
                let r = container::create(
                    &container_id,
                    &rootfs,
                    hostname.as_deref(),
                    hosts.as_deref(),
                    resolv_conf.as_deref(),
                );
                conn.respond(id, r.map(|()| Response::Created));
            });
        }
        Request::Shutdown => {
            let conn = conn.clone();
            spawn_named("shutdown", move || {
                container::destroy_all();
                // SAFETY: sync has no preconditions.
                unsafe { libc::sync() };
                conn.respond(id, Ok(Response::Done));
                // Let the answer leave the device before the VM ends.
                std::thread::sleep(std::time::Duration::from_millis(200));
                crate::init::power_off();
            });
        }
    }
}
