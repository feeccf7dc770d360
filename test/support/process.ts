// Process checks shared by the tests that start and stop namespaces' processes.

/** Whether a process with this PID still exists (signal 0 only checks, it delivers nothing). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
