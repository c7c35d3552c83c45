# Bash completion for ./fastvideo: `source scripts/fastvideo-completion.bash`.
# Asks the CLI itself (System.CommandLine's [suggest] directive) for the completions at the cursor; when none fits,
# bash completes file names (recipes, folders).
_fastvideo_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" IFS=$'\n'
    local words
    words="$(FASTVIDEO_NO_BUILD=1 "${COMP_WORDS[0]}" "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null)" || return
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _fastvideo_complete fastvideo
