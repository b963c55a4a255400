# fish completion for cbctl(1): commands, their flags, states, --field
# names, and circuit keys from the running cbd. The flag lists are checked
# against `cbctl COMMAND --help` by tests/e2e/test_completion.py.

set -l cbctl_commands get success failure transition reset ping pipe acquire report force unforce configure policy watch list stats metrics export import run
set -l key_commands get success failure transition reset acquire report force unforce configure policy watch run
set -l snapshot_fields state failureCount successCount lastFailureTime lastStateChange generation

# Keys from the running cbd: half a second at most, errors dropped, and a
# bound on how many keys one completion pulls in.
function __cbctl_keys
    set -l socket
    set -l words (commandline -opc)
    set -l i (contains -i -- --socket $words)
    and set socket --socket $words[(math $i + 1)]
    command cbctl $socket --timeout 500 list --keys 2>/dev/null | head -n 1000
end

# True while the command has no positional yet (the key comes first).
function __cbctl_needs_key
    set -l words (commandline -opc)
    set -l seen_command 0
    set -l positionals 0
    set -l skip 0
    for w in $words[2..-1]
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $w
            case --socket --timeout --field --expect --expect-generation --generation --permit --duration-ms --ttl --reason --failure-threshold --reset-timeout-ms --half-open-max --success-threshold --probe-lease-ms --trip-rule --window-type --window-size --minimum-calls --failure-rate-threshold --slow-call-duration-ms --slow-call-rate-threshold --reset-timeout-max-ms --mode --unset --prefix --format --state --kill-after --success-codes
                set skip 1
            case '-*'
            case '*'
                if test $seen_command -eq 0
                    set seen_command 1
                else
                    set positionals (math $positionals + 1)
                end
        end
    end
    test $positionals -eq 0
end

complete -c cbctl -f
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -l socket -r -F -d "cbd's socket"
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -l timeout -x -d 'Milliseconds to wait for cbd'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -l version -d 'Print the version'
complete -c cbctl -s h -l help -d 'Print help'

complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a get -d "Print a circuit's snapshot"
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a success -d 'Record a success'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a failure -d 'Record a failure'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a transition -d 'Move a circuit to STATE'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a reset -d 'Remove a circuit'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a ping -d 'Check that cbd answers'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a pipe -d 'Send NDJSON requests from stdin'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a acquire -d 'Ask whether a call may go ahead'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a report -d 'Report the outcome of an acquired call'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a force -d 'Pin a circuit open or closed'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a unforce -d 'Lift a pin'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a configure -d "Set a key's own policy"
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a policy -d "Print a key's effective policy"
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a watch -d 'Print state changes as they happen'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a list -d 'List circuits'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a stats -d 'Daemon counters'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a metrics -d 'Prometheus exposition'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a export -d 'Write every circuit as JSON lines'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a import -d 'Read export lines from stdin'
complete -c cbctl -n "not __fish_seen_subcommand_from $cbctl_commands" -a run -d 'Run a command through the circuit'

# Keys, then the second positional where it is a fixed set.
complete -c cbctl -n "__fish_seen_subcommand_from $key_commands; and __cbctl_needs_key" -a '(__cbctl_keys)'
complete -c cbctl -n "__fish_seen_subcommand_from transition; and not __cbctl_needs_key" -a 'closed open half-open'
complete -c cbctl -n "__fish_seen_subcommand_from force; and not __cbctl_needs_key" -a 'open closed'
complete -c cbctl -n "__fish_seen_subcommand_from report; and not __cbctl_needs_key" -a 'success failure ignored'

complete -c cbctl -n "__fish_seen_subcommand_from get success failure transition" -l field -x -a "$snapshot_fields" -d 'Print only this field'
complete -c cbctl -n "__fish_seen_subcommand_from transition" -l expect -x -a 'closed open half-open' -d 'Only if in this state'
complete -c cbctl -n "__fish_seen_subcommand_from transition" -l expect-generation -x -d 'Only at this generation'
complete -c cbctl -n "__fish_seen_subcommand_from acquire" -l field -x -a 'allowed permit retryAfterMs generation state failureCount successCount lastFailureTime lastStateChange' -d 'Print only this field'
complete -c cbctl -n "__fish_seen_subcommand_from report" -l duration-ms -x -d 'How long the call took (ms)'
complete -c cbctl -n "__fish_seen_subcommand_from report" -l generation -x -d 'The generation acquire returned'
complete -c cbctl -n "__fish_seen_subcommand_from report" -l permit -x -d 'The permit acquire returned'
complete -c cbctl -n "__fish_seen_subcommand_from report" -l field -x -a 'stale generation state failureCount successCount lastFailureTime lastStateChange' -d 'Print only this field'
complete -c cbctl -n "__fish_seen_subcommand_from force" -l ttl -x -d 'Lift the pin after this long'
complete -c cbctl -n "__fish_seen_subcommand_from force" -l reason -x -d 'Why'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l failure-threshold -x -d 'Failures that open it'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l reset-timeout-ms -x -d 'Open time before a probe'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l half-open-max -x -d 'Probes at once'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l success-threshold -x -d 'Probes needed to close'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l probe-lease-ms -x -d 'Probe permit lifetime'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l trip-rule -x -a 'count consecutive rate' -d 'What opens a closed circuit'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l window-type -x -a 'count time' -d 'Rate rule: window of calls or of time'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l window-size -x -d 'Rate rule: window in calls or ms'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l minimum-calls -x -d 'Calls before a rate is judged'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l failure-rate-threshold -x -d 'Failure percent that opens'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l slow-call-duration-ms -x -d 'A call this long is slow'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l slow-call-rate-threshold -x -d 'Slow-call percent that opens'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l reset-timeout-max-ms -x -d 'Longest open time under backoff'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l mode -x -a 'enforce observe disabled' -d 'Enforce, observe or disabled'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l unset -x -a 'failureThreshold resetTimeoutMs halfOpenMax successThreshold probeLeaseMs tripRule windowType windowSize minimumCalls failureRateThreshold slowCallDurationMs slowCallRateThreshold resetTimeoutMaxMs mode' -d 'Drop this field'
complete -c cbctl -n "__fish_seen_subcommand_from configure" -l clear -d 'Drop the whole policy first'
complete -c cbctl -n "__fish_seen_subcommand_from watch list export" -l prefix -x -a '(__cbctl_keys)' -d 'Only keys starting so'
complete -c cbctl -n "__fish_seen_subcommand_from watch" -l format -x -a 'json text' -d 'Output format'
complete -c cbctl -n "__fish_seen_subcommand_from list" -l state -x -a 'closed open half-open' -d 'Only this state'
complete -c cbctl -n "__fish_seen_subcommand_from policy" -l field -x -a 'failureThreshold resetTimeoutMs halfOpenMax successThreshold probeLeaseMs tripRule windowType windowSize minimumCalls failureRateThreshold slowCallDurationMs slowCallRateThreshold resetTimeoutMaxMs mode' -d 'Print only these fields (repeatable, or NAME,NAME)'
complete -c cbctl -n "__fish_seen_subcommand_from list stats policy" -l json -d 'JSON even on a terminal'
complete -c cbctl -n "__fish_seen_subcommand_from list" -l keys -d 'Only the keys, one a line'
complete -c cbctl -n "__fish_seen_subcommand_from metrics" -l per-circuit -d 'A state gauge per circuit'
complete -c cbctl -n "__fish_seen_subcommand_from run" -l timeout -x -d 'Kill the command after this long'
complete -c cbctl -n "__fish_seen_subcommand_from run" -l kill-after -x -d 'SIGKILL this much later'
complete -c cbctl -n "__fish_seen_subcommand_from run" -l success-codes -x -d 'Exit statuses that count as success'
complete -c cbctl -n "__fish_seen_subcommand_from run" -l fail-closed -d 'Exit 3 if cbd is unreachable'
