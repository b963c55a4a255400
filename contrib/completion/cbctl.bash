# bash completion for cbctl(1): commands, their flags, states, --field
# names, and circuit keys from the running cbd. The flag lists are checked
# against `cbctl COMMAND --help` by tests/e2e/test_completion.py.

_cbctl_commands="get success failure transition reset ping pipe acquire report force unforce configure policy watch list stats metrics export import run"

# The flags each command takes (besides --help).
_cbctl_flags() {
    case $1 in
        get | success | failure) echo "--field" ;;
        transition) echo "--expect --expect-generation --field" ;;
        acquire) echo "--field" ;;
        report) echo "--duration-ms --generation --permit --field" ;;
        force) echo "--ttl --reason" ;;
        policy) echo "--field --json" ;;
        configure) echo "--failure-threshold --reset-timeout-ms --half-open-max --success-threshold --probe-lease-ms --trip-rule --window-type --window-size --minimum-calls --failure-rate-threshold --slow-call-duration-ms --slow-call-rate-threshold --reset-timeout-max-ms --mode --unset --clear" ;;
        watch) echo "--prefix --format" ;;
        list) echo "--prefix --state --json --keys" ;;
        stats) echo "--json" ;;
        metrics) echo "--per-circuit" ;;
        export) echo "--prefix" ;;
        run) echo "--timeout --kill-after --success-codes --fail-closed" ;;
    esac
}

# Flags that take a value, so the word after them is not a positional.
_cbctl_flag_takes_value() {
    case $1 in
        --socket | --timeout | --field | --expect | --expect-generation | --generation | \
            --permit | --duration-ms | --ttl | --reason | --failure-threshold | \
            --reset-timeout-ms | --half-open-max | --success-threshold | --probe-lease-ms | \
            --trip-rule | --window-type | --window-size | --minimum-calls | \
            --failure-rate-threshold | --slow-call-duration-ms | --slow-call-rate-threshold | \
            --reset-timeout-max-ms | --mode | --unset | --prefix | --format | --state | \
            --kill-after | --success-codes) return 0 ;;
    esac
    return 1
}

# Keys from the running cbd that start with $1. A missing or slow daemon must
# never hang the shell: half a second at most, errors dropped, and a bound on
# how many keys a Tab can pull in.
_cbctl_keys() {
    command cbctl "${_cbctl_socket[@]}" --timeout 500 list --keys --prefix "$1" 2>/dev/null |
        head -n 1000
}

_cbctl() {
    local cur prev words cword
    if declare -F _get_comp_words_by_ref >/dev/null; then
        # Keys often hold ':' (a word break by default): keep them whole.
        _get_comp_words_by_ref -n : cur prev words cword
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    # Find the command, the --socket to ask for keys, and how many
    # positionals the command already has.
    local command="" positionals=0 i word after_dashdash=""
    _cbctl_socket=()
    for ((i = 1; i < cword; i++)); do
        word=${words[i]}
        if [[ -n $after_dashdash ]]; then
            positionals=$((positionals + 1))
        elif [[ $word == -- ]]; then
            after_dashdash=1
        elif [[ $word == --socket ]]; then
            _cbctl_socket=(--socket "${words[i + 1]}")
            i=$((i + 1))
        elif [[ $word == --socket=* ]]; then
            _cbctl_socket=("$word")
        elif [[ $word == -* ]]; then
            _cbctl_flag_takes_value "$word" && i=$((i + 1))
        elif [[ -z $command ]]; then
            command=$word
        else
            positionals=$((positionals + 1))
        fi
    done

    local IFS=$'\n'
    local snapshot_fields="state failureCount successCount lastFailureTime lastStateChange generation"
    local policy_fields="failureThreshold resetTimeoutMs halfOpenMax successThreshold probeLeaseMs tripRule windowType windowSize minimumCalls failureRateThreshold slowCallDurationMs slowCallRateThreshold resetTimeoutMaxMs mode"
    case $prev in
        --socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        --field)
            if [[ $command == policy ]]; then
                # NAME,NAME: complete the name after the last comma.
                local names=""
                [[ $cur == *,* ]] && names=${cur%,*},
                COMPREPLY=($(IFS=' ' compgen -P "$names" -W "$policy_fields" -- "${cur##*,}"))
                return
            fi
            local fields=$snapshot_fields
            [[ $command == acquire ]] && fields="allowed permit retryAfterMs generation state failureCount successCount lastFailureTime lastStateChange"
            [[ $command == report ]] && fields="stale generation state failureCount successCount lastFailureTime lastStateChange"
            COMPREPLY=($(IFS=' ' compgen -W "$fields" -- "$cur"))
            return
            ;;
        --expect | --state)
            COMPREPLY=($(IFS=' ' compgen -W "closed open half-open" -- "$cur"))
            return
            ;;
        --format)
            COMPREPLY=($(IFS=' ' compgen -W "json text" -- "$cur"))
            return
            ;;
        --unset)
            COMPREPLY=($(IFS=' ' compgen -W "$policy_fields" -- "$cur"))
            return
            ;;
        --trip-rule)
            COMPREPLY=($(IFS=' ' compgen -W "count consecutive rate" -- "$cur"))
            return
            ;;
        --window-type)
            COMPREPLY=($(IFS=' ' compgen -W "count time" -- "$cur"))
            return
            ;;
        --mode)
            COMPREPLY=($(IFS=' ' compgen -W "enforce observe disabled" -- "$cur"))
            return
            ;;
        --prefix)
            COMPREPLY=($(_cbctl_keys "$cur"))
            declare -F __ltrim_colon_completions >/dev/null && __ltrim_colon_completions "$cur"
            return
            ;;
    esac
    if _cbctl_flag_takes_value "$prev"; then
        return # a number, a duration or free text: nothing to offer
    fi

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(IFS=' ' compgen -W "--socket --timeout --version --help" -- "$cur"))
        else
            COMPREPLY=($(IFS=' ' compgen -W "$_cbctl_commands" -- "$cur"))
        fi
        return
    fi

    if [[ $command == run && -n $after_dashdash ]]; then
        # The guarded command and its arguments.
        if ((positionals == 1)); then
            COMPREPLY=($(compgen -c -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi

    if [[ $cur == -* ]]; then
        COMPREPLY=($(IFS=' ' compgen -W "$(_cbctl_flags "$command") --help" -- "$cur"))
        return
    fi

    case $command in
        get | success | failure | transition | reset | acquire | report | force | unforce | \
            configure | policy | watch | run)
            if ((positionals == 0)); then
                COMPREPLY=($(_cbctl_keys "$cur"))
                declare -F __ltrim_colon_completions >/dev/null && __ltrim_colon_completions "$cur"
            elif ((positionals == 1)); then
                case $command in
                    transition) COMPREPLY=($(IFS=' ' compgen -W "closed open half-open" -- "$cur")) ;;
                    force) COMPREPLY=($(IFS=' ' compgen -W "open closed" -- "$cur")) ;;
                    report) COMPREPLY=($(IFS=' ' compgen -W "success failure ignored" -- "$cur")) ;;
                    run) COMPREPLY=($(IFS=' ' compgen -W "--" -- "$cur")) ;;
                esac
            fi
            ;;
    esac
}

complete -F _cbctl cbctl
