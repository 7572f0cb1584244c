// The CA down for longer than a certificate's remaining life (issue 18 part 2), on the namespace
// cluster with 40 s workload certificates (`--cert-ttl 40s`). What a user notices: while the
// certificates are valid nothing changes (the agents serve with what they hold, and say renewal
// fails); once they expire, new cross-node connections fail closed (refused by the client's agent,
// never sent in plain text) and the agent logs the expiry; when the CA returns, the certificates
// are renewed and traffic flows again. The times are printed, not asserted (docs/reliability.md).
import { type ClusterPod, type DemoResult, eventually, startDemo } from '@hypha/test';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ECHO_PORT = 9200;
const TTL_S = 40;
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';

let demo: DemoResult;

beforeAll(async () => {
  // Read by the agents this test file starts (each vitest file runs in its own process).
  process.env.HYPHA_CERT_TTL = `${TTL_S}s`;
  demo = await startDemo();
  await demo.mesh.cluster.startApp(demo.pods.echoV2, 'tcp-echo', ['--port', String(ECHO_PORT)]);
}, 120_000);

afterAll(async () => {
  delete process.env.HYPHA_CERT_TTL;
  await demo?.mesh.stop();
});

const roundTrip = (from: ClusterPod, to: ClusterPod): Promise<boolean> =>
  demo.mesh.cluster.tcpRoundTrip(from.netns, to.ip, ECHO_PORT);

interface CertView {
  identity: string;
  state: string;
  serial?: string;
  notAfter?: string;
  lastError?: string;
}

async function clientCert(): Promise<CertView> {
  const certs = JSON.parse(
    await demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15000/certs'),
  ) as CertView[];
  const c = certs.find((x) => x.identity === CLIENT_ID);
  if (!c) throw new Error(`node-a holds no certificate for ${CLIENT_ID}: ${JSON.stringify(certs)}`);
  return c;
}

/** hypha_agent_certificate_expiry_seconds of the client's identity on node-a. */
async function expirySeconds(): Promise<number> {
  const text = await demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
  const line = text
    .split('\n')
    .find((l) => l.startsWith('hypha_agent_certificate_expiry_seconds{') && l.includes(`"${CLIENT_ID}"`));
  if (!line) throw new Error('no hypha_agent_certificate_expiry_seconds for the client identity');
  return Number(line.split(' ').pop());
}

async function expiredGauge(): Promise<number> {
  const text = await demo.mesh.fetchInNode('node-a', 'http://127.0.0.1:15020/metrics');
  const line = text
    .split('\n')
    .find((l) => l.startsWith('hypha_agent_certificates_by_state{state="expired"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('CA down past certificate expiry', () => {
  it('agents serve until their certificates expire, then fail closed and say so; they recover once the CA returns', async () => {
    const { pods } = demo;
    const agentA = demo.mesh.agents.get('node-a')!;
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    const before = await clientCert();
    expect(before.state).toBe('ready');
    const notAfter = Date.parse(before.notAfter!);
    // The CA honoured --cert-ttl: the certificate lives about 40 s (plus the CA's backdating).
    expect(notAfter - Date.now()).toBeLessThanOrEqual(TTL_S * 1000 + 1000);

    const killedAt = Date.now();
    await demo.mesh.killCa();
    // While the certificate is valid, new connections still work.
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);

    // Renewal (at about half life) fails, and the agent says so with the identity and notAfter.
    const warn = await agentA.waitFor(
      (e) =>
        typeof e.msg === 'string' &&
        e.msg.startsWith('certificate renewal failed; serving with the held certificate') &&
        e.identity === CLIENT_ID,
      TTL_S * 1000,
    );
    const renewalFailedAt = Date.now();
    expect(String(warn.err)).toMatch(/cannot reach the CA/);
    expect(Date.parse(String(warn.notAfter))).toBe(notAfter);
    const left = await expirySeconds();
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(TTL_S);
    // Still valid: traffic still flows.
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(true);
    const servedAfterKill = Date.now() - killedAt;

    // Past notAfter: the agent logs the expiry, /certs and the metrics say expired.
    const expiredLog = await agentA.waitFor(
      (e) => typeof e.msg === 'string' && e.msg.startsWith(`certificate expired: ${CLIENT_ID}`),
      Math.max(0, notAfter - Date.now()) + 20_000,
    );
    expect(String(expiredLog.msg)).toContain('new connections for it fail until the CA answers');
    const expiredAt = Date.now();
    expect((await clientCert()).state).toBe('expired');
    expect(await expirySeconds()).toBeLessThanOrEqual(0);
    expect(await expiredGauge()).toBeGreaterThanOrEqual(1);

    // A new connection fails closed: the client's agent refuses it (no tunnel without a valid
    // certificate, nothing sent in plain text), and its access log says why.
    const seen = agentA.events.length;
    expect(await roundTrip(pods.client, pods.echoV2)).toBe(false);
    const refusal = () =>
      agentA.events
        .slice(seen)
        .find((e) => e.type === 'access' && JSON.stringify(e).includes(`${pods.echoV2.ip}:${ECHO_PORT}`));
    const refused = await eventually(
      async () => refusal(),
      (e) => e !== undefined,
      10_000,
    );
    expect(refused, 'an access log line for the refused connection').toBeDefined();
    expect(JSON.stringify(refused)).toMatch(/no certificate for/);
    expect(JSON.stringify(refused)).toMatch(/cannot reach the CA/);

    // The CA returns: the certificate is renewed (new notAfter) and traffic flows again.
    const restartedAt = Date.now();
    await demo.mesh.restartCa();
    const renewed = await eventually(
      clientCert,
      (c) => c.state === 'ready' && Date.parse(c.notAfter ?? '') > notAfter,
      60_000,
    );
    const renewedAt = Date.now();
    expect(renewed.serial).not.toBe(before.serial);
    await eventually(
      () => roundTrip(pods.client, pods.echoV2),
      (ok) => ok,
      10_000,
    );
    const flowingAt = Date.now();
    console.log(
      `CA down past expiry (--cert-ttl ${TTL_S}s): renewal failure logged ${((renewalFailedAt - killedAt) / 1000).toFixed(1)} s after the CA was killed, traffic still served ${(servedAfterKill / 1000).toFixed(1)} s after; expiry logged ${((expiredAt - notAfter) / 1000).toFixed(1)} s after notAfter, new connections then refused; after the CA restart the certificate was renewed in ${((renewedAt - restartedAt) / 1000).toFixed(1)} s and traffic flowed ${((flowingAt - restartedAt) / 1000).toFixed(1)} s after the restart`,
    );
  }, 150_000);
});
