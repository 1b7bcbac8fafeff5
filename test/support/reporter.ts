/**
 * Mocha's spec output, plus the one plain line CI reads: "N passed, M failed".
 */
import Mocha from 'mocha';

const { Spec } = Mocha.reporters;
const { EVENT_RUN_END } = Mocha.Runner.constants;

class SwitchyardReporter extends Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const stats = runner.stats;
      process.stdout.write(`\n${stats?.passes ?? 0} passed, ${stats?.failures ?? 0} failed\n`);
    });
  }
}

export = SwitchyardReporter;
