/**
 * How a switchyard process shows in `ps`: a readable title (`switchyard: worker 1`), and a
 * command name (/proc/PID/comm, what `top`, `pstree` and /proc/PID/stat show) without spaces.
 * Setting the title also sets the command name to its first 15 bytes, spaces included, and a
 * space there splits the second field of /proc/PID/stat, which tools that read it by fields
 * (CPU accounting scripts, the benchmark in load-tests/) then misread.
 */
import { writeFileSync } from 'node:fs';

export function nameProcess(title: string, command: string): void {
  process.title = title;
  if (process.platform !== 'linux') return;
  try {
    // The main thread's name is the process's command name; 15 bytes at most.
    writeFileSync('/proc/self/comm', command.slice(0, 15));
  } catch {
    // Not permitted here: the title alone.
  }
}
