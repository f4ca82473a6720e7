// A Node program with a local test server, child processes and file I/O.
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execSync } = require('child_process');

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ path: req.url }));
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  http.get(`http://127.0.0.1:${port}/hello`, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => {
      console.log(JSON.parse(body));
      server.close();
    });
  });
});
const tmp = path.join(os.tmpdir(), 'x.json');
fs.writeFileSync(tmp, JSON.stringify({ a: 1 }));
console.log(JSON.parse(fs.readFileSync(tmp, 'utf8')));
console.log(execSync('echo hi').toString().trim());
const decoded = Buffer.from('aGVsbG8=', 'base64').toString();
console.log(decoded, process.env.HOME, process.memoryUsage().rss > 0);
class Stack { constructor() { this.items = []; } push(x) { this.items.push(x); } }
const s = new Stack(); s.push(1); console.log(s.items.length);
