// Entry point kept for tests: `node dist/test/support/podserver-main.js --name web-1 --tcp 80,8080 --udp 53`
// runs the pod server of src/sandbox/podserver-main.ts.
import '../../src/sandbox/podserver-main.js';
