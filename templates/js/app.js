// {{name}}: a wpod sidecar in JavaScript, a small server beside the main container. It reads its
// settings from its env, writes a file into the volume it shares with the main container,
// answers on a port of the pod's loopback, tells the pod it is ready, and stops cleanly when the
// pod stops: a starting point. wpod-sidecar.js lists what else it can do (connect to a service,
// read files, wait on several things at once); wpod-main.js reads the main container's state,
// statistics and output.
import * as wpod from './wpod-sidecar.js';

export const run = wpod.main(() => {
  const greeting = wpod.getenv('GREETING', 'hello');
  const port = Number(wpod.getenv('PORT', '8080'));
  wpod.writeFile('/shared/greeting.txt', `${greeting}\n`);
  console.log(`{{name}}: /shared holds ${wpod.listDir('/shared').join(', ')}`);
  const server = wpod.listen(port);
  wpod.ready();
  console.log(`{{name}}: ready, answering on port ${port}`);
  let answered = 0;
  // accept() returns null once the pod is stopping.
  for (let conn; (conn = server.accept()) !== null; conn.close()) {
    try {
      const question = conn.readLine();
      answered += 1;
      conn.write(`${greeting} (answer ${answered})\n`);
      if (answered === 1) console.log(`{{name}}: ${conn.peer} asked ${JSON.stringify(question)}`);
    } catch (e) {
      console.log(`{{name}}: ${conn.peer}: ${e.message}`);
    }
  }
  server.close();
  console.log(`{{name}}: stopping (${wpod.stopping()} ms left) after ${answered} answers`);
});
