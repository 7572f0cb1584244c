// Reaching a server that listens inside the cluster (a pod's Prometheus, say) from the host without
// adding anything to the machine's own network namespace: a small forwarder runs in the server's
// namespace and listens on a unix socket (a file, which the host can open), piping each connection
// to host:port there. `hypha dashboard --prometheus unix:PATH` and `--admin unix:PATH` read them.
import type { TestCluster } from '../cluster/cluster.js';

export interface ExposedSocket {
  /** `unix:<path>`, as `hypha dashboard` and `hypha tap` take it. */
  address: string;
  /** Stops the forwarder (it also ends with the cluster). */
  stop(): void;
}

/** Forwards each connection on a unix socket (mode 0600) to host:port inside `netns`. */
export async function exposeInNetns(
  cluster: TestCluster,
  netns: string,
  target: { host: string; port: number },
  socketPath: string,
): Promise<ExposedSocket> {
  const child = cluster.spawn(
    netns,
    process.execPath,
    ['-e', FORWARDER, socketPath, target.host, String(target.port)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) =>
      reject(new Error(`forwarder to ${target.host}:${target.port} in ${netns} exited ${code}: ${err}`)),
    );
  });
  return { address: `unix:${socketPath}`, stop: () => child.kill('SIGTERM') };
}

const FORWARDER = `const net=require('net'),fs=require('fs');const [p,h,port]=process.argv.slice(1);try{fs.unlinkSync(p)}catch{}
const s=net.createServer(c=>{const u=net.connect(Number(port),h);const k=()=>{c.destroy();u.destroy()};
c.on('error',k);u.on('error',k);c.on('close',k);u.on('close',k);c.pipe(u).pipe(c)});
s.listen(p,()=>{fs.chmodSync(p,0o600);process.stdout.write('listening\\n')});process.on('SIGTERM',()=>{try{fs.unlinkSync(p)}catch{};process.exit(0)});`;
