// {{name}}: a wpod sidecar in JavaScript. It reads the main container's first line of output
// and its live statistics, tells the pod it is ready, and stops cleanly when the pod stops: a
// starting point. wpod-sidecar.js lists what else it can do.
import * as wpod from './wpod-sidecar.js';

export const run = {
  run() {
    wpod.ready();
    console.log('{{name}}: ready');
    const mains = wpod.containers();
    if (mains.length === 0) {
      console.log('{{name}}: the pod has no main container to watch');
      return;
    }
    const main = mains[0].name;
    for (const line of wpod.mainLogs(main)) {
      console.log(`{{name}}: ${main} said ${JSON.stringify(line.text)}`);
      break;
    }
    wpod.waitRunning(main);
    try {
      const s = wpod.stats(main);
      console.log(`{{name}}: ${main} uses ${s.rssBytes / 1024n} KiB of memory and ${s.threads} threads`);
    } catch (e) {
      console.log(`{{name}}: no statistics for ${main}: ${JSON.stringify(e.payload ?? String(e))}`);
    }
    const ms = wpod.waitStopping();
    console.log(`{{name}}: stopping (${ms} ms left)`);
  },
};
