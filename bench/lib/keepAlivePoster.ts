/**
 * A minimal HTTP/1.1 client for load the bench generates from its own
 * process: one keep-alive connection, one request in flight, the request's
 * bytes built once. node:http costs the bench about 300 µs of CPU per request
 * (a parser and a request object per request, header validation, streams);
 * this costs a tenth of that. On a small machine the load generator's CPU is
 * taken from the server and PostgreSQL it measures, so it should cost as
 * little as a load tool (autocannon, wrk) does.
 *
 * It reads what a JSON API answers: a status line, headers with
 * `content-length`, a body. Anything else (chunked encoding, a closed
 * connection, a timeout) rejects the request with a clear error.
 */
import net from "node:net";

export interface RawResponse {
  status: number;
  body: string;
}

const HEAD_END = Buffer.from("\r\n\r\n");

export class KeepAlivePoster {
  private readonly socket: net.Socket;
  private readonly connected: Promise<void>;
  private buffered: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: RawResponse) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  private failure: Error | null = null;

  /** `request` is the whole request, head and body, as sent each time. */
  constructor(
    host: string,
    port: number,
    private readonly request: Buffer,
    private readonly timeoutMs = 30_000,
  ) {
    this.socket = net.connect({ host, port, noDelay: true });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", (err) => this.fail(err));
    this.socket.on("close", () => this.fail(new Error("the server closed the connection")));
  }

  /** Builds a request's bytes: `method path`, the headers given plus host and content-length, the body. */
  static build(method: string, path: string, host: string, headers: Record<string, string>, body: Buffer): Buffer {
    const lines = [`${method} ${path} HTTP/1.1`, `host: ${host}`, `content-length: ${body.length}`];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), body]);
  }

  async send(): Promise<RawResponse> {
    await this.connected;
    if (this.failure) throw this.failure;
    if (this.waiting) throw new Error("KeepAlivePoster sends one request at a time");
    return new Promise<RawResponse>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      this.waiting = { resolve, reject, timer };
      this.socket.write(this.request);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiting;
    this.waiting = null;
    if (w) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const headEnd = this.buffered.indexOf(HEAD_END);
    if (headEnd < 0) return;
    const head = this.buffered.toString("latin1", 0, headEnd);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length || /\r\ntransfer-encoding:/i.test(head)) {
      this.fail(new Error(`an answer without a content-length (${head.split("\r\n")[0] ?? ""})`));
      return;
    }
    const bodyStart = headEnd + HEAD_END.length;
    const bodyEnd = bodyStart + Number(length[1]);
    if (this.buffered.length < bodyEnd) return;
    const body = this.buffered.toString("utf8", bodyStart, bodyEnd);
    const rest = this.buffered.subarray(bodyEnd);
    this.buffered = rest.length ? Buffer.from(rest) : Buffer.alloc(0);
    const w = this.waiting;
    this.waiting = null;
    if (!w) {
      this.fail(new Error(`an answer nobody asked for (status ${status})`));
      return;
    }
    clearTimeout(w.timer);
    w.resolve({ status, body });
  }
}
