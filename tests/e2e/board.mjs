// Drives the live floor board in headless Chromium (Debian's package) over the DevTools
// protocol, with nothing but Node itself (no npm packages, no browser download):
//
//   node --experimental-websocket tests/e2e/board.mjs BASE_URL MACHINE_ID [SCREENSHOT.png]
//
// Opens BASE_URL/, waits for the machine's tile and the live connection, changes the
// machine's status through the HTTP API, and waits for the tile to turn red: its
// `data-status` and its rendered background colour. Exits non-zero with a reason otherwise.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, machine, screenshot] = process.argv.slice(2);
if (!base || !machine) {
  console.error('usage: board.mjs BASE_URL MACHINE_ID [SCREENSHOT.png]');
  process.exit(2);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const profile = mkdtempSync(join(tmpdir(), 'eq-board-'));
// The flags keep Chromium off the network: this machine has none, and it must not try.
const chrome = spawn(process.env.CHROMIUM || '/usr/bin/chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', `--user-data-dir=${profile}`,
  '--remote-debugging-port=0', '--remote-debugging-address=127.0.0.1',
  '--window-size=1600,900', 'about:blank',
], { stdio: 'ignore' });

// Stops Chromium and removes its profile (once it has exited: it writes until then).
async function finish(code) {
  const exited = new Promise((resolve) => chrome.once('exit', resolve));
  chrome.kill('SIGKILL');
  await Promise.race([exited, sleep(5000)]);
  try {
    rmSync(profile, { recursive: true, force: true });
  } catch {
    // A leftover temporary profile is not a test failure.
  }
  process.exit(code);
}

async function fail(reason) {
  console.error(`FAIL: ${reason}`);
  await finish(1);
}

async function until(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) await fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// Chromium writes the port it picked into the profile directory.
const port = await until('the DevTools port', () => {
  try {
    return readFileSync(join(profile, 'DevToolsActivePort'), 'utf8').split('\n')[0];
  } catch {
    return null;
  }
});
const targets = await until('a page target', async () => {
  try {
    const list = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
    return list.find((t) => t.type === 'page') ? list : null;
  } catch {
    return null;
  }
});
const socket = new WebSocket(targets.find((t) => t.type === 'page').webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  socket.addEventListener('open', resolve);
  socket.addEventListener('error', reject);
});
let nextId = 0;
const pending = new Map();
const pageErrors = [];
socket.addEventListener('message', (m) => {
  const message = JSON.parse(m.data);
  if (message.id && pending.has(message.id)) {
    pending.get(message.id)(message);
    pending.delete(message.id);
  }
  if (message.method === 'Runtime.exceptionThrown') pageErrors.push(JSON.stringify(message.params));
});
const send = (method, params = {}) => new Promise((resolve) => {
  const id = ++nextId;
  pending.set(id, resolve);
  socket.send(JSON.stringify({ id, method, params }));
});
const evaluate = async (expression) => {
  const answer = await send('Runtime.evaluate', { expression, returnByValue: true });
  return answer.result?.result?.value;
};

await send('Runtime.enable');
await send('Page.enable');
// The board gets its (viewer) token in the fragment, as a wall screen would be set up.
const boardToken = process.env.EQ_BOARD_TOKEN ?? '';
await send('Page.navigate', { url: `${base}/#token=${encodeURIComponent(boardToken)}` });

const tile = `document.querySelector('.tile[data-id="${machine}"]')`;
const read = `(() => { const t = ${tile}; if (!t) return null;
  return { status: t.dataset.status, colour: getComputedStyle(t).backgroundColor,
           connection: document.getElementById('connection')?.dataset.state }; })()`;
const before = await until('the tile and a live connection', async () => {
  const state = await evaluate(read);
  return state && state.connection === 'live' ? state : null;
});
if (before.status === 'red') await fail('the machine must not start red');

// A change made through the API, as a tablet would.
const answer = await fetch(`${base}/v1/equipment/${machine}/status`, {
  method: 'PUT',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${process.env.EQ_API_TOKEN}` },
  body: JSON.stringify({ status: 'red', reason: 'jam', note: 'clay stuck in the mould' }),
});
if (answer.status !== 200) await fail(`setting the status answered ${answer.status}`);

const after = await until('the tile to turn red', async () => {
  const state = await evaluate(read);
  return state && state.status === 'red' && state.colour !== before.colour ? state : null;
});
if (pageErrors.length) await fail(`errors on the page: ${pageErrors.join('; ')}`);
if (screenshot) {
  await sleep(300);
  const shot = await send('Page.captureScreenshot', { format: 'png' });
  writeFileSync(screenshot, Buffer.from(shot.result.data, 'base64'));
}
console.log(JSON.stringify({ before, after }));
await finish(0);
