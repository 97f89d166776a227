/**
 * `/status`: the instance's `/health` at a glance, refreshed every few
 * seconds while the tab is visible. Loaded on demand (its own chunk).
 */
import { useEffect, useRef, useState, type ReactNode } from "react";
import { navigate } from "../../router";
import { ChatIcon } from "../../ui/icons";

interface Check {
  status: "up" | "down";
  error?: string;
  [detail: string]: unknown;
}

interface Health {
  status: "healthy" | "unhealthy";
  error?: string;
  checks: Record<string, Check>;
}

interface Signal {
  value: number | null;
  threshold: number;
  over: boolean;
  forMs: number;
}

/** An instance as a future `/health` or API may list it. */
interface InstanceRow {
  id: string;
  heartbeatAt?: string;
  startedAt?: string;
  version?: string;
}

const REFRESH_MS = 2000;
const HISTORY = 60;

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

function duration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

const bytes = (n: number | null) => (n === null ? "—" : n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GB` : `${Math.round(n / 1024 ** 2)} MB`);

function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return "—";
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return "—";
  const s = Math.max(0, (now - t) / 1000);
  return s < 1 ? "just now" : `${duration(s)} ago`;
}

const SIGNAL_NAMES: Record<string, { label: string; unit: string }> = {
  queueDepth: { label: "Queue depth", unit: "" },
  p95ResponseMs: { label: "p95 response time", unit: " ms" },
  cpuPercent: { label: "CPU", unit: " %" },
  memoryPercent: { label: "Memory", unit: " %" },
};

function StatusDot({ up }: { up: boolean }) {
  return <span className="dot" data-up={up} aria-hidden="true" />;
}

function Card({ title, status, children, wide }: { title: string; status?: Check | undefined; children: ReactNode; wide?: boolean }) {
  return (
    <section className="card" data-wide={wide || undefined} aria-labelledby={`card-${title}`}>
      <header className="card-head">
        <h2 id={`card-${title}`}>{title}</h2>
        {status && (
          <span className="badge" data-up={status.status === "up"}>
            <StatusDot up={status.status === "up"} />
            {status.status === "up" ? "up" : "down"}
          </span>
        )}
      </header>
      {status?.error && <p className="card-error">{status.error}</p>}
      {children}
    </section>
  );
}

function Stat({ label, value, hint }: { label: string; value: ReactNode; hint?: string }) {
  return (
    <div className="stat" title={hint}>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function Sparkline({ values, label }: { values: number[]; label: string }) {
  if (values.length < 2) return null;
  const max = Math.max(1, ...values);
  const w = 240;
  const h = 40;
  const step = w / (HISTORY - 1);
  // Newest at the right edge; older samples scroll off to the left.
  const xy = values.map((v, i) => [w - (values.length - 1 - i) * step, h - (v / max) * (h - 6) - 3] as const);
  const line = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const first = xy[0]?.[0] ?? 0;
  return (
    <figure className="spark">
      <svg className="sparkline" viewBox={`0 0 ${w} ${h}`} preserveAspectRatio="none" role="img" aria-label={label}>
        <polygon points={`${first.toFixed(1)},${h} ${line} ${w},${h}`} className="spark-area" />
        <polyline points={line} fill="none" stroke="currentColor" strokeWidth="2" vectorEffect="non-scaling-stroke" />
      </svg>
      <figcaption>
        <span>queued + running, last {Math.round(((values.length - 1) * REFRESH_MS) / 1000)} s</span>
        <span>peak {Math.max(...values)}</span>
      </figcaption>
    </figure>
  );
}

function useHealth() {
  const [health, setHealth] = useState<Health | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [updatedAt, setUpdatedAt] = useState<number | null>(null);
  const [history, setHistory] = useState<number[]>([]);
  const timer = useRef<number | null>(null);

  useEffect(() => {
    let live = true;
    let controller: AbortController | null = null;
    async function tick() {
      timer.current = null;
      if (document.visibilityState === "visible") {
        controller = new AbortController();
        try {
          const res = await fetch("/health", { headers: { accept: "application/json" }, cache: "no-store", signal: controller.signal });
          const body = (await res.json()) as Health;
          if (!live) return;
          if (typeof body !== "object" || body === null || typeof body.checks !== "object") throw new Error(`unexpected answer (HTTP ${res.status})`);
          setHealth(body);
          setError(null);
          setUpdatedAt(Date.now());
          const q = body.checks.queue;
          setHistory((h) => [...h, (num(q?.queued) ?? 0) + (num(q?.running) ?? 0)].slice(-HISTORY));
        } catch (err) {
          if (!live) return;
          setError(err instanceof Error ? err.message : String(err));
        }
      }
      if (live) timer.current = window.setTimeout(() => void tick(), REFRESH_MS);
    }
    void tick();
    const onVisible = () => {
      if (document.visibilityState === "visible" && timer.current !== null) {
        clearTimeout(timer.current);
        void tick();
      }
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      live = false;
      controller?.abort();
      if (timer.current !== null) clearTimeout(timer.current);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, []);
  return { health, error, updatedAt, history };
}

function useNow(ms = 1000) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

function instancesOf(health: Health): InstanceRow[] | null {
  for (const c of [health.checks.instances, health.checks.queue]) {
    const list = c?.instances ?? c?.items;
    if (Array.isArray(list)) return list.filter((x): x is InstanceRow => typeof x === "object" && x !== null && typeof (x as InstanceRow).id === "string");
  }
  return null;
}

export default function StatusPage() {
  const { health, error, updatedAt, history } = useHealth();
  const now = useNow();
  useEffect(() => {
    document.title = "Status · ESA Agents";
  }, []);

  const c = health?.checks ?? {};
  const queue = c.queue;
  const autoscale = c.autoscale;
  const uptime = c.uptime;
  const memory = c.memory;
  const db = c.database;
  // "streams" ({websockets, sse, runFeeds}); older builds called it "websockets" ({connections, runFeeds}).
  const streams = c.streams ?? c.websockets;
  const agents = c.agents;
  const instances = health ? instancesOf(health) : null;
  const signals = (autoscale?.signals ?? {}) as Record<string, Signal>;
  const reasons = Array.isArray(autoscale?.reasons) ? (autoscale.reasons as unknown[]).filter((r): r is string => typeof r === "string") : [];
  const agentList = agents && typeof agents.agents === "object" && agents.agents !== null ? Object.entries(agents.agents as Record<string, { available?: boolean; reason?: string }>) : [];
  const known = new Set(["queue", "autoscale", "uptime", "memory", "database", "streams", "websockets", "agents", "migrations", "instances"]);
  const others = Object.entries(c).filter(([k]) => !known.has(k));
  const heap = num(memory?.heapUsedBytes);
  const heapLimit = num(memory?.heapLimitBytes);

  return (
    <div className="status-page">
      <header className="status-header">
        <a
          href="/"
          className="brand"
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          <span className="brand-mark" aria-hidden="true">
            E
          </span>
          ESA Agents
        </a>
        <a
          href="/"
          className="btn btn-ghost btn-small"
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          <ChatIcon />
          Back to chat
        </a>
      </header>
      <main className="status-main">
        <div className="status-hero" data-status={health?.status ?? "unknown"}>
          <div>
            <h1>System status</h1>
            <p className="status-summary" role="status">
              <StatusDot up={health?.status === "healthy"} />
              {health ? (health.status === "healthy" ? "All systems healthy" : `Unhealthy: ${health.error ?? "a check failed"}`) : error ? `Cannot reach /health: ${error}` : "Checking…"}
            </p>
          </div>
          <dl className="hero-stats">
            <Stat label="Version" value={str(uptime?.version) ?? "—"} />
            <Stat label="Uptime" value={num(uptime?.seconds) !== null ? duration(num(uptime?.seconds) ?? 0) : "—"} />
            <Stat
              label="Updated"
              value={
                <span className="updated" data-updated-at={updatedAt ?? undefined}>
                  <span className="live-dot" aria-hidden="true" />
                  {updatedAt ? (now - updatedAt < 1500 ? "just now" : `${Math.round((now - updatedAt) / 1000)} s ago`) : "—"}
                </span>
              }
              hint={`Refreshed every ${REFRESH_MS / 1000} s while this tab is visible`}
            />
          </dl>
        </div>
        {error && health && (
          <p className="card-error" role="alert">
            Last refresh failed: {error}. Showing the previous answer.
          </p>
        )}

        <div className="cards">
          <Card title="Queue" status={queue}>
            <dl className="stats">
              <Stat label="Queued" value={<span data-testid="queue-queued">{num(queue?.queued) ?? "—"}</span>} />
              <Stat label="Running" value={<span data-testid="queue-running">{num(queue?.running) ?? "—"}</span>} />
              <Stat label="Oldest queued" value={num(queue?.oldestQueuedSeconds) ? duration(num(queue?.oldestQueuedSeconds) ?? 0) : "—"} />
            </dl>
            <Sparkline values={history} label="Queued plus running runs over the last two minutes" />
          </Card>

          <Card title="Autoscale" status={autoscale}>
            <dl className="stats">
              <Stat label="Recommended instances" value={<span data-testid="autoscale-recommended">{num(autoscale?.recommended) ?? "—"}</span>} />
              <Stat label="Live instances" value={num(autoscale?.liveInstances) ?? num(queue?.liveInstances) ?? "—"} />
            </dl>
            {reasons.length > 0 && (
              <ul className="reasons" aria-label="Reasons">
                {reasons.map((r) => (
                  <li key={r}>{r}</li>
                ))}
              </ul>
            )}
            {Object.keys(signals).length > 0 && (
              <table className="signals">
                <caption className="sr-only">Scaling signals</caption>
                <thead>
                  <tr>
                    <th scope="col">Signal</th>
                    <th scope="col">Value</th>
                    <th scope="col">Target</th>
                  </tr>
                </thead>
                <tbody>
                  {Object.entries(signals).map(([name, s]) => {
                    const meta = SIGNAL_NAMES[name] ?? { label: name, unit: "" };
                    return (
                      <tr key={name} data-over={s.over || undefined}>
                        <th scope="row">{meta.label}</th>
                        <td>{s.value === null ? "—" : `${Math.round(s.value * 10) / 10}${meta.unit}`}</td>
                        <td>
                          {s.over ? "over " : "≤ "}
                          {s.threshold}
                          {meta.unit}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            )}
          </Card>

          <Card title="Instances">
            {instances ? (
              <table className="signals">
                <caption className="sr-only">Instances and their last heartbeat</caption>
                <thead>
                  <tr>
                    <th scope="col">Instance</th>
                    <th scope="col">Last heartbeat</th>
                    <th scope="col">Version</th>
                  </tr>
                </thead>
                <tbody>
                  {instances.map((i) => (
                    <tr key={i.id}>
                      <th scope="row">
                        <code>{i.id}</code>
                      </th>
                      <td>{ago(i.heartbeatAt, now)}</td>
                      <td>{i.version ?? "—"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <>
                <dl className="stats">
                  <Stat label="Live instances" value={<span data-testid="live-instances">{num(queue?.liveInstances) ?? num(autoscale?.liveInstances) ?? "—"}</span>} />
                  <Stat label="This instance's answer" value={ago(str(uptime?.timestamp), now)} />
                </dl>
                <p className="muted small">
                  Answered by <code>{str(queue?.instanceId) ?? "this instance"}</code>. The server does not list other instances or their heartbeats yet; the count comes from
                  the heartbeat table.
                </p>
              </>
            )}
          </Card>

          <Card title="Database" status={db}>
            <dl className="stats">
              <Stat label="Latency" value={num(db?.latencyMs) !== null ? `${num(db?.latencyMs)} ms` : "—"} />
              <Stat label="Connections" value={num(db?.totalConnections) ?? "—"} />
              <Stat label="Idle" value={num(db?.idleConnections) ?? "—"} />
              <Stat label="Waiting" value={num(db?.waiting) ?? "—"} />
            </dl>
            {c.migrations && (
              <p className="check-line">
                <StatusDot up={c.migrations.status === "up"} /> Migrations {c.migrations.status === "up" ? "applied" : (c.migrations.error ?? "pending")}
              </p>
            )}
          </Card>

          <Card title="Agents" status={agents}>
            <ul className="agent-status">
              {agentList.map(([name, a]) => (
                <li key={name}>
                  <StatusDot up={a.available === true} />
                  <span className="agent-status-name">{name}</span>
                  <span className="muted small">{a.available ? "available" : (a.reason ?? "unavailable")}</span>
                </li>
              ))}
            </ul>
          </Card>

          <Card title="Memory" status={memory}>
            <dl className="stats">
              <Stat label="RSS" value={bytes(num(memory?.rssBytes))} />
              <Stat label="Heap used" value={bytes(heap)} />
              <Stat label="Heap limit" value={bytes(heapLimit)} />
            </dl>
            {heap !== null && heapLimit ? (
              <div className="meter" role="meter" aria-label="Heap used" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round((heap / heapLimit) * 100)}>
                <span style={{ width: `${Math.min(100, (heap / heapLimit) * 100)}%` }} />
              </div>
            ) : null}
          </Card>

          {streams && (
            <Card title="Live streams" status={streams}>
              <dl className="stats">
                <Stat label="WebSockets" value={num(streams.websockets) ?? num(streams.connections) ?? "—"} />
                {num(streams.sse) !== null && <Stat label="SSE streams" value={num(streams.sse)} />}
                <Stat label="Runs streamed" value={num(streams.runFeeds) ?? "—"} hint="Runs with at least one live subscriber on this instance" />
              </dl>
            </Card>
          )}

          {others.map(([name, check]) => (
            <Card key={name} title={name} status={check}>
              <dl className="stats">
                {Object.entries(check)
                  .filter(([k, v]) => k !== "status" && k !== "error" && (typeof v === "number" || typeof v === "string" || typeof v === "boolean"))
                  .map(([k, v]) => (
                    <Stat key={k} label={k} value={String(v)} />
                  ))}
              </dl>
            </Card>
          ))}
        </div>
      </main>
    </div>
  );
}
