/* parser.y — the grammar of the .attn language (SPEC.md §1). A pure Bison parser with
 * locations; semantic values are arena nodes (fe.h), so error recovery leaks nothing. Errors
 * recover at ';' and '}' so one run reports several. Syntax errors are phrased by
 * yyreport_syntax_error below from the expected tokens and the scanner's bracket stack. */

%code requires {
#include "fe.h"
}

%code provides {
int fe_yylex(FE_YYSTYPE *lval, FE_YYLTYPE *lloc, void *scanner);
}

%code {
#include <stdio.h>
#include <string.h>

static void fe_yyerror(FE_YYLTYPE *loc, void *scanner, FeParse *p, const char *msg);

/* A rule's span runs from its first to its last symbol; an empty rule sits where the last
 * symbol before it ended. */
#define YYLLOC_DEFAULT(Cur, Rhs, N)                \
    do {                                           \
        if (N) {                                   \
            (Cur).begin = YYRHSLOC(Rhs, 1).begin;  \
            (Cur).end = YYRHSLOC(Rhs, N).end;      \
        } else {                                   \
            (Cur).begin = YYRHSLOC(Rhs, 0).end;    \
            (Cur).end = YYRHSLOC(Rhs, 0).end;      \
        }                                          \
    } while (0)

static FeNode *leaf_int(FeParse *p, FeNodeKind kind, FeSpan at, int64_t v) {
    FeNode *n = fe_leaf(p, kind, at);
    n->ival = v;
    return n;
}

static FeNode *leaf_float(FeParse *p, FeSpan at, double v) {
    FeNode *n = fe_leaf(p, FE_N_FLOAT, at);
    n->fval = v;
    return n;
}

static FeNode *leaf_name(FeParse *p, FeSpan at, const char *name) {
    FeNode *n = fe_leaf(p, FE_N_NAME, at);
    n->name = name;
    return n;
}

/* NAME = expr;  let NAME = expr;  param NAME = expr; */
static FeStmt *stmt_named(FeParse *p, FeStmtKind kind, FeSpan at, const char *name,
                          FeSpan name_at, FeNode *expr) {
    FeStmt *s = fe_stmt(p, kind, at);
    s->name = name;
    s->name_loc = name_at.begin;
    s->expr = expr;
    return s;
}

static FeStmt *stmt_def(FeParse *p, FeSpan at, const char *name, FeSpan name_at,
                        FeNodeList params, FeNode *expr) {
    FeStmt *s = stmt_named(p, FE_S_DEF, at, name, name_at, expr);
    s->params = params.first;
    s->nparams = params.n;
    return s;
}

static FeStmt *stmt_input(FeParse *p, FeSpan at, const char *type, FeSpan type_at,
                          const char *name, FeSpan name_at, FeNodeList dims) {
    FeStmt *s = stmt_named(p, FE_S_INPUT, at, name, name_at, NULL);
    s->type = type;
    s->type_loc = type_at.begin;
    s->dims = dims.first;
    s->ndims = dims.n;
    return s;
}

static FeStmt *stmt_block(FeParse *p, FeStmtKind kind, FeSpan at, const char *name,
                          FeSpan name_at, FeStmtList body) {
    FeStmt *s = fe_stmt(p, kind, at);
    s->name = name;
    s->name_loc = name_at.begin;
    s->body = body.first;
    return s;
}
}

%define api.pure full
%define api.prefix {fe_yy}
%define api.token.prefix {TOK_}
%define api.location.type {FeSpan}
%define parse.error custom
%locations
%expect 0
%lex-param {void *scanner}
%parse-param {void *scanner} {FeParse *p}

%union {
    int64_t ival;       /* INT */
    double fval;        /* FLOAT */
    const char *str;    /* IDENT, in the arena */
    FeNode *node;       /* expressions */
    FeNodeList nodes;   /* argument, index, dimension and parameter lists */
    FeStmt *stmt;       /* statements and items */
    FeStmtList stmts;   /* statement lists */
}

%token END 0 "end of file"
%token <str> IDENT "name"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token LET "let" PARAM "param" DEF "def" ATTENTION "attention" INPUT "input" MLA "mla"
%token TRUE "true" FALSE "false" INF "inf"
%token SEMI ";" COMMA "," ASSIGN "=" LPAREN "(" RPAREN ")" LBRACK "[" RBRACK "]"
%token LBRACE "{" RBRACE "}" QUESTION "?" COLON ":"
%token OROR "||" ANDAND "&&" NOT "!" EQ "==" NE "!=" LT "<" LE "<=" GT ">" GE ">="
%token PLUS "+" MINUS "-" STAR "*" SLASH "/" PERCENT "%"

/* C precedence, loosest first. */
%right "?" ":"
%left "||"
%left "&&"
%left "==" "!="
%left "<" "<=" ">" ">="
%left "+" "-"
%left "*" "/" "%"
%precedence "!" UNARY

%type <node> expr postfix primary
%type <nodes> exprs args names
%type <stmt> stmt block
%type <stmts> stmts

%%

/* file := { stmt } ; errors skip to the next ';' or '}' (reporting resumes at once after a '}') */
file
    : %empty
    | file stmt             { fe_add_item(p, $2); }
    | file error ";"
    | file error "}"        { yyerrok; }
    ;

/* block := 'attention' NAME '{' { stmt } '}' */
block
    : "attention" IDENT "{" stmts "}"
                            { $$ = stmt_block(p, FE_S_ATTENTION, @1, $2, @2, $4); }
    | "attention" IDENT "{" stmts error "}"
                            { $$ = stmt_block(p, FE_S_ATTENTION, @1, $2, @2, $4); yyerrok; }
    ;

stmts
    : %empty                { $$ = (FeStmtList){0}; }
    | stmts stmt            { $$ = fe_stmts_add($1, $2); }
    | stmts error ";"       { $$ = $1; }
    ;

/* stmt := NAME '=' expr ';' | 'let' NAME '=' expr ';' | 'param' NAME '=' expr ';'
 *       | 'def' NAME '(' [ NAME { ',' NAME } ] ')' '=' expr ';'
 *       | 'input' TYPE NAME [ '[' expr { ',' expr } ']' ] ';'
 *       | 'mla' '{' { stmt } '}' | block
 * Which statement may appear where is checked by sema.c, with better messages. */
stmt
    : IDENT "=" expr ";"    { $$ = stmt_named(p, FE_S_ASSIGN, @1, $1, @1, $3); }
    | "let" IDENT "=" expr ";"
                            { $$ = stmt_named(p, FE_S_LET, @1, $2, @2, $4); }
    | "param" IDENT "=" expr ";"
                            { $$ = stmt_named(p, FE_S_PARAM, @1, $2, @2, $4); }
    | "def" IDENT "(" ")" "=" expr ";"
                            { $$ = stmt_def(p, @1, $2, @2, (FeNodeList){0}, $6); }
    | "def" IDENT "(" names ")" "=" expr ";"
                            { $$ = stmt_def(p, @1, $2, @2, $4, $7); }
    | "input" IDENT IDENT ";"
                            { $$ = stmt_input(p, @1, $2, @2, $3, @3, (FeNodeList){0}); }
    | "input" IDENT IDENT "[" exprs "]" ";"
                            { $$ = stmt_input(p, @1, $2, @2, $3, @3, $5); }
    | block
    | "mla" "{" stmts "}"   { $$ = stmt_block(p, FE_S_MLA, @1, NULL, @1, $3); }
    | "mla" "{" stmts error "}"
                            { $$ = stmt_block(p, FE_S_MLA, @1, NULL, @1, $3); yyerrok; }
    ;

names
    : IDENT                 { $$ = fe_list_add((FeNodeList){0}, leaf_name(p, @1, $1)); }
    | names "," IDENT       { $$ = fe_list_add($1, leaf_name(p, @3, $3)); }
    ;

exprs
    : expr                  { $$ = fe_list_add((FeNodeList){0}, $1); }
    | exprs "," expr        { $$ = fe_list_add($1, $3); }
    ;

args
    : %empty                { $$ = (FeNodeList){0}; }
    | exprs
    ;

/* expr := expr '?' expr ':' expr | expr BINOP expr | ('!' | '-') expr | postfix */
expr
    : expr "?" expr ":" expr { $$ = fe_cond(p, @2, $1, $3, $5); }
    | expr "||" expr        { $$ = fe_binary(p, IR_OR, @2, $1, $3); }
    | expr "&&" expr        { $$ = fe_binary(p, IR_AND, @2, $1, $3); }
    | expr "==" expr        { $$ = fe_binary(p, IR_EQ, @2, $1, $3); }
    | expr "!=" expr        { $$ = fe_binary(p, IR_NE, @2, $1, $3); }
    | expr "<" expr         { $$ = fe_binary(p, IR_LT, @2, $1, $3); }
    | expr "<=" expr        { $$ = fe_binary(p, IR_LE, @2, $1, $3); }
    | expr ">" expr         { $$ = fe_binary(p, IR_GT, @2, $1, $3); }
    | expr ">=" expr        { $$ = fe_binary(p, IR_GE, @2, $1, $3); }
    | expr "+" expr         { $$ = fe_binary(p, IR_ADD, @2, $1, $3); }
    | expr "-" expr         { $$ = fe_binary(p, IR_SUB, @2, $1, $3); }
    | expr "*" expr         { $$ = fe_binary(p, IR_MUL, @2, $1, $3); }
    | expr "/" expr         { $$ = fe_binary(p, IR_DIV, @2, $1, $3); }
    | expr "%" expr         { $$ = fe_binary(p, IR_MOD, @2, $1, $3); }
    | "!" expr              { $$ = fe_unary(p, IR_NOT, @1, $2); }
    | "-" expr %prec UNARY  { $$ = fe_unary(p, IR_NEG, @1, $2); }
    | postfix
    ;

/* postfix := primary { '[' expr { ',' expr } ']' } */
postfix
    : primary
    | postfix "[" exprs "]" { $$ = fe_index(p, $1, @2, $3); }
    ;

/* primary := INT | FLOAT | 'true' | 'false' | 'inf' | NAME | NAME '(' [ exprs ] ')' | '(' expr ')' */
primary
    : INT                   { $$ = leaf_int(p, FE_N_INT, @1, $1); }
    | FLOAT                 { $$ = leaf_float(p, @1, $1); }
    | "true"                { $$ = leaf_int(p, FE_N_BOOL, @1, 1); }
    | "false"               { $$ = leaf_int(p, FE_N_BOOL, @1, 0); }
    | "inf"                 { $$ = leaf_float(p, @1, __builtin_inf()); }
    | IDENT                 { $$ = leaf_name(p, @1, $1); }
    | IDENT "(" args ")"    { $$ = fe_call(p, $1, @1, $3); }
    | "(" expr ")"          { $$ = $2; }
    ;

%%

/* How a message names an expected token kind. */
static const char *kind_text(yysymbol_kind_t k) {
    switch (k) {
    case YYSYMBOL_YYEOF: return "end of file";
    case YYSYMBOL_IDENT: return "a name";
    case YYSYMBOL_INT: return "an integer";
    case YYSYMBOL_FLOAT: return "a number";
    default: break;
    }
    /* yytname spells the other tokens as their aliases in double quotes: "\";\"" */
    static const struct { yysymbol_kind_t k; const char *text; } punct[] = {
        {YYSYMBOL_LET, "'let'"}, {YYSYMBOL_PARAM, "'param'"}, {YYSYMBOL_DEF, "'def'"},
        {YYSYMBOL_ATTENTION, "'attention'"}, {YYSYMBOL_INPUT, "'input'"}, {YYSYMBOL_MLA, "'mla'"},
        {YYSYMBOL_TRUE, "'true'"}, {YYSYMBOL_FALSE, "'false'"}, {YYSYMBOL_INF, "'inf'"},
        {YYSYMBOL_SEMI, "';'"}, {YYSYMBOL_COMMA, "','"}, {YYSYMBOL_ASSIGN, "'='"},
        {YYSYMBOL_LPAREN, "'('"}, {YYSYMBOL_RPAREN, "')'"}, {YYSYMBOL_LBRACK, "'['"},
        {YYSYMBOL_RBRACK, "']'"}, {YYSYMBOL_LBRACE, "'{'"}, {YYSYMBOL_RBRACE, "'}'"},
        {YYSYMBOL_QUESTION, "'?'"}, {YYSYMBOL_COLON, "':'"}, {YYSYMBOL_OROR, "'||'"},
        {YYSYMBOL_ANDAND, "'&&'"}, {YYSYMBOL_NOT, "'!'"}, {YYSYMBOL_EQ, "'=='"},
        {YYSYMBOL_NE, "'!='"}, {YYSYMBOL_LT, "'<'"}, {YYSYMBOL_LE, "'<='"}, {YYSYMBOL_GT, "'>'"},
        {YYSYMBOL_GE, "'>='"}, {YYSYMBOL_PLUS, "'+'"}, {YYSYMBOL_MINUS, "'-'"},
        {YYSYMBOL_STAR, "'*'"}, {YYSYMBOL_SLASH, "'/'"}, {YYSYMBOL_PERCENT, "'%'"},
    };
    for (size_t i = 0; i < sizeof punct / sizeof punct[0]; i++)
        if (punct[i].k == k) return punct[i].text;
    return "a token";
}

/* The text of a scanned token for "found ...": its source text quoted, or "end of file". */
static const char *tok_text(FeParse *p, const FeTok *t) {
    if (t->kind == 0) return "end of file";
    size_t n;
    const char *s = fe_span_text(p, t->span, &n);
    return fe_check(p->c, arena_printf(&p->c->ast, "'%s'", fe_quote(p->c, s, n)));
}

static char closer_of(char open) { return open == '(' ? ')' : open == '[' ? ']' : '}'; }

static yysymbol_kind_t closer_kind(char open) {
    return open == '(' ? YYSYMBOL_RPAREN : open == '[' ? YYSYMBOL_RBRACK : YYSYMBOL_RBRACE;
}

/* Lua-style messages: "expected ')' to close '(' (opened at line 3), found ';'",
 * "expected ';' after statement", "expected an expression, found '}'". */
static int yyreport_syntax_error(const yypcontext_t *yctx, void *scanner, FeParse *p) {
    (void)scanner;
    FeCtx *c = p->c;
    yysymbol_kind_t tok = yypcontext_token(yctx);
    yysymbol_kind_t exp[YYNTOKENS];
    int n = yypcontext_expected_tokens(yctx, exp, YYNTOKENS);
    if (n < 0) n = 0;
    bool want[YYNTOKENS] = {false};
    for (int i = 0; i < n; i++) want[exp[i]] = true;

    FeLoc at = yypcontext_location(yctx)->begin;
    /* "after the previous token": where a missing ';' or '}' belongs */
    FeLoc after = p->hist[1].span.end.src ? p->hist[1].span.end : at;
    bool eof = tok == YYSYMBOL_YYEOF;
    const char *found = tok_text(p, &p->hist[0]);

    /* the innermost bracket open before the lookahead (which may open or close one) */
    int nb = p->nbrackets_before;
    const FeBracket *open = nb > 0 ? &p->brackets[nb - 1] : NULL;

    if (p->garbage_before) {
        /* the scanner reported the characters it skipped; this error is their consequence */
    } else if (open && (eof || (open->open != '{' && want[closer_kind(open->open)]))) {
        fe_error(c, eof ? after : at, "expected '%c' to close %s (opened at line %d), found %s",
                 closer_of(open->open), open->what, open->loc.line, found);
    } else if (want[YYSYMBOL_SEMI]) {
        fe_error(c, after, "expected ';' after %s", open ? "statement" : "definition");
    } else if (want[YYSYMBOL_INT]) {
        fe_error(c, at, "expected an expression, found %s", found);
    } else if (want[YYSYMBOL_LET] && want[YYSYMBOL_IDENT]) {
        if (open)
            fe_error(c, at, "expected a statement or '}', found %s", found);
        else
            fe_error(c, at, "expected 'attention', 'let', 'param' or 'def', found %s", found);
    } else if (n == 1 && want[YYSYMBOL_IDENT] && p->hist[1].span.end.src) {
        fe_error(c, at, "expected a name after %s, found %s", tok_text(p, &p->hist[1]), found);
    } else if (n >= 1 && n <= 4) {
        StrBuf sb;
        sb_init(&sb);
        for (int i = 0; i < n; i++) {
            if (i > 0) sb_puts(&sb, i == n - 1 ? " or " : ", ");
            sb_puts(&sb, kind_text(exp[i]));
        }
        char *list = fe_strndup(c, sb_str(&sb), sb.len);
        sb_free(&sb);
        fe_error(c, at, "expected %s, found %s", list, found);
    } else {
        fe_error(c, at, "unexpected %s", found);
    }
    return 0;
}

/* Bison calls this only when its stack is exhausted. */
static void fe_yyerror(FE_YYLTYPE *loc, void *scanner, FeParse *p, const char *msg) {
    (void)scanner;
    fe_error(p->c, loc->begin, "%s: the input is nested too deeply", msg);
    p->c->stop = true;
}
